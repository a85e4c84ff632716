"""
The bare relay really relays: every paced call reaches the device, in a
real relay process that is gone afterwards.

Run C{.venv/bin/python -m pytest -q bench/test_floor_latency.py}.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from floor_latency import floor_once


def test_every_call_arrives() -> None:
    """Every paced call reaches the device through the relay."""
    # floor_once raises if any op does not arrive within its bound.
    result = asyncio.run(floor_once(200, 0.001))
    assert 0 < result["p50 ms"] <= result["p99 ms"] <= result["p99.9 ms"]
    assert result["server cpu s"] >= 0
    assert result["seconds"] >= 0.199
