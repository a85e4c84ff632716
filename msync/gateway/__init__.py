"""
The backend gateway: C{POST /gateway.do}, its signatures, and a client.

  - L{msync.gateway.signing}: the canonical string, request and answer
    signatures (pure functions).
  - L{msync.gateway.app}: L{GatewayApp}, the Klein route.
  - L{msync.gateway.client}: L{GatewayClient}, for backends and tests.
  - L{msync.gateway.cli}: C{msync push}.
"""

from __future__ import annotations

from msync.gateway.app import GatewayApp
from msync.gateway.client import GatewayClient, GatewayResult

__all__ = ["GatewayApp", "GatewayClient", "GatewayResult"]
