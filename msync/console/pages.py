"""
The web console's pages: one HTML document and its assets, all shipped in
the package (C{msync/console/static}), so the console works with no
network beyond the daemon itself.

The app is plain HTML, CSS and JavaScript, with no build step; it talks to
the JSON API of L{msync.console.api} under C{/api/}.  Only the files named
in L{ASSETS} are ever served, so no request path can reach any other file.

Every answer carries the same security headers: a Content-Security-Policy
that allows scripts, styles and requests from this origin only (the app
has no inline script or style), no framing, and no content sniffing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "Asset", "ConsolePages"]

#: Everything the page may load, fetch or submit comes from the daemon.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; "
    "script-src 'self'; "
    "style-src 'self'; "
    "img-src 'self' data:; "
    "connect-src 'self'; "
    "object-src 'none'; "
    "base-uri 'none'; "
    "form-action 'self'; "
    "frame-ancestors 'none'"
)

_SECURITY_HEADERS = {
    b"content-security-policy": CONTENT_SECURITY_POLICY.encode(),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
}

#: The files under C{/console/static/}, by name, with their media types.
ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

_INDEX = "index.html"
_HTML = "text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Asset:
    """One file the console serves: its bytes, media type and tag."""

    body: bytes
    content_type: str
    etag: bytes

    @classmethod
    def load(cls, name: str, content_type: str) -> Asset:
        """Read the package file C{static/NAME}."""
        body = (files("msync.console") / "static" / name).read_bytes()
        tag = hashlib.sha256(body).hexdigest()[:32]
        return cls(body, content_type, b'"' + tag.encode() + b'"')


class ConsolePages:
    """
    The console's single-page app: C{index.html} at C{/} and
    C{/console/}, and its assets at C{/console/static/NAME}.

    The files are read once, when this is made, so a request never
    touches the file system.
    """

    app = Klein()

    def __init__(self) -> None:
        self._index = Asset.load(_INDEX, _HTML)
        self._assets = {
            name: Asset.load(name, kind) for name, kind in ASSETS.items()
        }

    def resource(self) -> IResource:
        """The pages as a resource to serve."""
        resource: IResource = self.app.resource()
        return resource

    @app.route("/", methods=["GET"])
    @app.route("/console/", methods=["GET"])
    def index(self, request: IRequest) -> bytes:
        """
        The app's one HTML document.  It is never cached, so a new
        version of the daemon is picked up on the next load.
        """
        _secure(request)
        request.setHeader(b"content-type", _HTML.encode())
        request.setHeader(b"cache-control", b"no-store")
        return self._index.body

    @app.route("/console/static/<name>", methods=["GET"])
    def asset(self, request: IRequest, name: str) -> bytes:
        """
        One of the fixed set of assets, or 404.  Browsers revalidate
        each time (C{no-cache}) and get a 304 when their copy is current.
        """
        _secure(request)
        found = self._assets.get(name)
        if found is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            return b"not found\n"

        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"etag", found.etag)
        if _matches(request.getHeader(b"if-none-match"), found.etag):
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", found.content_type.encode())
        return found.body


def _secure(request: IRequest) -> None:
    for name, value in _SECURITY_HEADERS.items():
        request.setHeader(name, value)


def _matches(header: bytes | None, etag: bytes) -> bool:
    # If-None-Match holds one or more tags, or "*"; weak tags compare too.
    if header is None:
        return False
    tags = {t.strip().removeprefix(b"W/") for t in header.split(b",")}
    return b"*" in tags or etag in tags
