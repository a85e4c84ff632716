"""
The console's pages in memory (L{msync.console.pages}): what is served,
with which headers, and that nothing else is.  These need no browser;
they sit beside the browser tests because they test the same files.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib.resources import files
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from msync.console.pages import ASSETS, ConsolePages


def _static(name: str) -> bytes:
    return (files("msync.console") / "static" / name).read_bytes()


class _Refs(HTMLParser):
    """The URLs an HTML document loads, and whether it has inline code."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(
        self, tag: str, attrs: list[tuple[str, str | None]]
    ) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            url = values.get(name)
            if url and not url.startswith("#"):
                self.urls.append(url)
        self.inline += [n for n in values if n.startswith("on")]
        if "style" in values:
            self.inline.append("style")
        if tag == "script" and "src" not in values:
            self.inline.append("script")
        if tag == "style":
            self.inline.append("style")


class PagesTests(SynchronousTestCase):
    """C{ConsolePages} through StubTreq."""

    def setUp(self) -> None:
        self.treq = StubTreq(ConsolePages().resource())

    def get(self, path: str, **headers: str) -> tuple[Any, bytes]:
        """GET C{path}; return the response and its body."""
        response = self.successResultOf(
            self.treq.get(
                "http://console.test" + path,
                headers={k.replace("_", "-"): [v] for k, v in headers.items()},
            )
        )
        body = self.successResultOf(self.treq.content(response))
        return response, body

    def header(self, response: Any, name: str) -> str:
        """The one value of header C{name}."""
        values = response.headers.getRawHeaders(name)
        self.assertEqual(len(values), 1, name)
        return str(values[0])

    def assertSecure(self, response: Any) -> None:
        """The security headers every answer carries."""
        policy = self.header(response, "content-security-policy")
        self.assertIn("default-src 'self'", policy)
        self.assertIn("script-src 'self'", policy)
        self.assertIn("frame-ancestors 'none'", policy)
        self.assertNotIn("unsafe-inline", policy)
        self.assertNotIn("unsafe-eval", policy)
        self.assertEqual(self.header(response, "x-frame-options"), "DENY")
        self.assertEqual(
            self.header(response, "x-content-type-options"), "nosniff"
        )

    def test_index_at_root_and_console(self) -> None:
        """C{/} and C{/console/} serve index.html as HTML, never cached."""
        for path in ("/", "/console/"):
            response, body = self.get(path)
            self.assertEqual(response.code, 200)
            self.assertEqual(
                self.header(response, "content-type"),
                "text/html; charset=utf-8",
            )
            self.assertEqual(
                self.header(response, "cache-control"), "no-store"
            )
            self.assertSecure(response)
            self.assertEqual(body, _static("index.html"))

    def test_console_without_slash(self) -> None:
        """C{/console} serves the page too (its asset paths are absolute,
        so no relative URL breaks)."""
        response, body = self.get("/console")
        self.assertEqual(response.code, 200)
        self.assertEqual(body, _static("index.html"))

    def test_assets(self) -> None:
        """Each asset comes with its media type, a tag, C{no-cache} and
        the security headers."""
        for name, kind in ASSETS.items():
            response, body = self.get(f"/console/static/{name}")
            self.assertEqual(response.code, 200, name)
            self.assertEqual(self.header(response, "content-type"), kind)
            self.assertEqual(
                self.header(response, "cache-control"), "no-cache"
            )
            self.assertRegex(self.header(response, "etag"), r'^"[0-9a-f]+"$')
            self.assertSecure(response)
            self.assertEqual(body, _static(name))

    def test_revalidation(self) -> None:
        """A browser holding the current tag gets 304 and no body; with
        another tag, the whole asset."""
        response, _ = self.get("/console/static/console.js")
        etag = self.header(response, "etag")

        again, body = self.get(
            "/console/static/console.js", if_none_match=etag
        )
        self.assertEqual(again.code, 304)
        self.assertEqual(body, b"")

        other, body = self.get(
            "/console/static/console.js", if_none_match='"stale", W/"x"'
        )
        self.assertEqual(other.code, 200)
        self.assertEqual(body, _static("console.js"))

    def test_only_known_files(self) -> None:
        """Names outside the fixed set, encoded dots and slashes
        included, are 404 and reveal nothing."""
        for path in [
            "/console/static/index.html",
            "/console/static/pages.py",
            "/console/static/..%2fpages.py",
            "/console/static/%2e%2e/pages.py",
            "/console/static/../pages.py",
            "/console/static/console.js/",
            "/console/static/",
            "/console/pages.py",
            "/console/static/static/console.js",
        ]:
            response, body = self.get(path)
            self.assertEqual(response.code, 404, path)
            self.assertNotIn(b"import", body, path)
            self.assertNotIn(b"function", body, path)

    def test_page_loads_only_shipped_files(self) -> None:
        """index.html loads nothing but the shipped assets, from this
        origin, and has no inline script or style for the CSP to block;
        the CSS and the script name nothing from elsewhere."""
        refs = _Refs()
        refs.feed(_static("index.html").decode("utf-8"))
        self.assertEqual(refs.inline, [])
        self.assertTrue(refs.urls)
        for url in refs.urls:
            name = url.removeprefix("/console/static/")
            self.assertIn(name, ASSETS, url)

        style = _static("console.css").decode("utf-8")
        self.assertNotIn("url(", style)
        self.assertNotIn("@import", style)
        script = _static("console.js").decode("utf-8")
        # Only placeholders in forms name other hosts.
        for url in re.findall(r"https?://[^\s\"'`]+", script):
            self.assertRegex(url, r"^https?://[a-z.]+\.example/", url)
        for risky in ("innerHTML", "outerHTML", "eval(", "document.write"):
            self.assertNotIn(risky, script)
