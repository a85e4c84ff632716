"""
The HTTP listener's root: health, the backend gateway, and (as they
arrive) the console and metrics; and the Site that serves them, which
refuses oversized request bodies as they arrive.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from msync.gateway.app import MAX_BODY, GatewayApp
from msync.gateway.http import too_large
from msync.gateway.lean import GatewayFactory, to_site
from msync.metrics import CONTENT_TYPE, Metrics
from msync.store import Store

_log = Logger()


class RootApp:
    """The routes every msync HTTP listener serves."""

    app = Klein()

    def __init__(
        self, store: Store, gateway: GatewayApp, metrics: Metrics
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._metrics = metrics

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        """Every metric, in Prometheus text format."""
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        return self._metrics.render()

    @app.route("/gateway.do", methods=["POST"])
    def gateway(self, request: IRequest) -> bytes | Deferred[bytes]:
        """The signed backend API (L{msync.gateway.app})."""
        return self._gateway.gateway(request)

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        """Answer 200 when the store can be read, 503 otherwise."""
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        try:
            self._store.probe()
        except Exception as e:
            _log.warn("health check failed: {error}", error=repr(e))
            request.setResponseCode(503)
            return _json({"status": "unavailable", "store": "error"})
        return _json({"status": "ok", "store": "ok"})

    def resource(self) -> IResource:
        """The routes as a resource to serve."""
        resource: IResource = self.app.resource()
        return resource


class BoundedRequest(Request):
    """
    A request that refuses a body over C{limit} bytes as it arrives,
    with a 413 and a close, instead of buffering it to the end.
    """

    limit = MAX_BODY
    _refused = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.limit:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self.limit:
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(
        self, command: bytes, path: bytes, version: bytes
    ) -> None:
        if not self._refused:
            super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        if self._refused:
            return
        self._refused = True
        transport = self.channel.transport
        if transport is None:
            return
        transport.write(too_large(self.limit))
        transport.loseConnection()


class Root(Resource):
    """
    The listener's root: C{/api/...} goes to the admin API (whose routes
    are relative to it), C{/} and C{/console/...} to the console pages,
    everything else to L{RootApp}; the last two route on whole paths.
    """

    def __init__(
        self, app: IResource, api: IResource, pages: IResource
    ) -> None:
        super().__init__()
        self._app = app
        self._api = api
        self._pages = pages

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        if name == b"api":
            return self._api
        # Give the segment back: these apps match the whole path.
        request.postpath.insert(0, request.prepath.pop())
        if name in (b"", b"console"):
            return self._pages
        return self._app


class QuietSite(Site):
    """
    A C{Site} that writes no access log line per request: gateway query
    strings carry signatures, which must never reach a log, and a line per
    call is a measurable cost at thousands of calls a second.  C{/metrics}
    counts calls by result code instead.
    """

    def log(self, request: object) -> None:
        pass


def site(root: IResource) -> Site:
    """A plain C{Site}: no tracebacks in error pages, bounded bodies."""
    # twisted.web would parse every form body into request.args through
    # the email package; nothing here reads args (the gateway decodes its
    # bodies itself, strictly), so that work is switched off.
    s = QuietSite(
        root, requestFactory=BoundedRequest, parsePOSTFormSubmission=False
    )
    s.displayTracebacks = False
    return s


def front(
    http: Site,
    gateway: GatewayApp,
    clock: IReactorTime,
    max_body: int = MAX_BODY,
) -> GatewayFactory:
    """
    The HTTP listener's factory: C{POST /gateway.do} answered by the lean
    reader (L{msync.gateway.lean}), every other request by C{http}.
    """
    return GatewayFactory(gateway.calls.answer, to_site(http), max_body, clock)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
