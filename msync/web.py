"""
The HTTP listener's root: health now; the gateway, console and metrics
mount here as they arrive.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Site

from msync.store import Store

_log = Logger()


class RootApp:
    """The routes every msync HTTP listener serves."""

    app = Klein()

    def __init__(self, store: Store) -> None:
        self._store = store

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        """Answer 200 when the store can be read, 503 otherwise."""
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        try:
            self._store.setting("probe")
        except Exception as e:
            _log.warn("health check failed: {error}", error=repr(e))
            request.setResponseCode(503)
            return _json({"status": "unavailable", "store": "error"})
        return _json({"status": "ok", "store": "ok"})

    def resource(self) -> IResource:
        """The routes as a resource to serve."""
        resource: IResource = self.app.resource()
        return resource


def site(root: IResource) -> Site:
    """A plain C{Site} without tracebacks in error pages."""
    s = Site(root)
    s.displayTracebacks = False
    return s


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
