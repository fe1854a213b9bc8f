"""The simulated web: an HTTP forward proxy on loopback that answers for every `http://` URL itself.

The platform's link checks send their requests here (`links.http_proxy`), so redirect chains such as a
URL shortener's can be scripted without any real web server: `redirect(url, location)` makes `url`
answer `301` to `location`; every other URL answers `200 OK` with an empty page.
"""

from __future__ import annotations

import threading

from estafeta.world.http import LoopbackHttpServer


class WebProxy(LoopbackHttpServer):
    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self._redirects: dict[str, str] = {}
        self._requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def redirect(self, url: str, location: str) -> None:
        """Make `url` answer `301 Moved Permanently` to `location` (thread-safe)."""
        with self._lock:
            self._redirects[url] = location

    def requests(self) -> list[tuple[str, str]]:
        """(method, URL) of every request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._redirects.clear()
            self._requests.clear()

    def respond(self, method: str, target: str) -> tuple[str, dict[str, str], bytes]:
        with self._lock:
            self._requests.append((method, target))
            location = self._redirects.get(target)
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", {}, b""
        if location is not None:
            return "301 Moved Permanently", {"Location": location}, b""
        return "200 OK", {"Content-Type": "text/html"}, b""
