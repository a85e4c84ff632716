"""
The collector's pace: msync's processes collect the youngest generation
less often than CPython's default, and leave the older ratios alone.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from msync import collector


@pytest.fixture
def thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_pace_sets_the_young_threshold(thresholds: None) -> None:
    """After pace, a young collection comes every YOUNG allocations,
    and the older generations keep their ratios."""
    gc.set_threshold(700, 11, 12)
    collector.pace()
    assert gc.get_threshold() == (collector.YOUNG, 11, 12)
    assert collector.YOUNG > 700
