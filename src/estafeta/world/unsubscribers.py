"""The people of the simulated internet who press "unsubscribe" in their mailbox client.

A strict provider (gmail.test) refuses bulk mail (`Precedence: bulk`) that does not offer one-click
unsubscribe: a List-Unsubscribe https URI and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`
(RFC 8058). In the sandbox, whose pages have no public certificate, http to a loopback address counts.

After accepting list mail, a provider unsubscribes the recipients whose local part starts with `unsub`,
or who were named with `World.unsubscribe_for`, the way its web client does: gmail.test with the RFC 8058
POST (body `List-Unsubscribe=One-Click`, no cookies kept, redirects not followed), yahoo.test by mailing
the List-Unsubscribe `mailto:` address through the world's reporter. Every attempt is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import format_datetime
from urllib.parse import urlsplit

import httpx

from estafeta.world.one_click import ONE_CLICK, URI, headers, loopback, one_click_uri
from estafeta.world.providers import Provider
from estafeta.world.receivers import Received
from estafeta.world.reports import Reporter

log = logging.getLogger("estafeta.world")

LOCAL_PREFIX = "unsub"


@dataclass(frozen=True)
class Unsubscribe:
    """One unsubscribe a provider performed: `status` is the HTTP status of the POST (None: no answer), or
    None for mailto; `cookies` tells whether the answer tried to set one."""

    provider: str
    recipient: str
    method: str  # one-click | mailto
    target: str
    status: int | None
    cookies: bool = False


class Unsubscribers:
    """Unsubscribes chosen recipients after their provider accepted list mail (see the module docstring)."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self._lock = threading.Lock()
        self._chosen: set[str] = set()
        self._done: list[Unsubscribe] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def choose(self, addresses: Iterable[str]) -> None:
        with self._lock:
            self._chosen.update(a.lower() for a in addresses)

    def done(self) -> list[Unsubscribe]:
        with self._lock:
            return list(self._done)

    def reset(self) -> None:
        with self._lock:
            self._chosen.clear()
            self._done.clear()

    def _wants(self, recipient: str) -> bool:
        with self._lock:
            return recipient.lower().startswith(LOCAL_PREFIX) or recipient.lower() in self._chosen

    def after_accept(self, provider: Provider, received: Received) -> None:
        if provider.unsubscribes is None:
            return
        found = headers(received.data)
        uris = URI.findall(found.get("list-unsubscribe", ""))
        if not uris:
            return
        for recipient in received.rcpt_to:
            if not self._wants(recipient):
                continue
            if provider.unsubscribes == "one-click":
                url = one_click_uri(uris)
                if url is not None and found.get("list-unsubscribe-post") == ONE_CLICK:
                    task = asyncio.get_running_loop().create_task(self._post(provider.domain, recipient, url))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            else:
                mailto = next((u[len("mailto:") :] for u in uris if u.lower().startswith("mailto:")), None)
                if mailto is not None:
                    self._mail(provider.domain, recipient, mailto.partition("?")[0], received)

    async def _post(self, provider: str, recipient: str, url: str) -> None:
        status, cookies = None, False
        if loopback(urlsplit(url).hostname):  # the world only ever reaches 127.0.0.0/8
            try:
                async with httpx.AsyncClient(verify=False, follow_redirects=False, timeout=10) as client:
                    response = await client.post(
                        url, content=ONE_CLICK, headers={"Content-Type": "application/x-www-form-urlencoded"}
                    )
                status, cookies = response.status_code, "set-cookie" in response.headers
            except httpx.HTTPError as exc:
                log.info("one-click unsubscribe for %s failed: %s", recipient, exc)
        with self._lock:
            self._done.append(Unsubscribe(provider, recipient, "one-click", url, status, cookies))

    def _mail(self, provider: str, recipient: str, address: str, received: Received) -> None:
        message = (
            f"From: <{recipient}>\r\nTo: <{address}>\r\nSubject: unsubscribe\r\n"
            f"Date: {format_datetime(received.received_at)}\r\n\r\nunsubscribe\r\n"
        ).encode()
        self._reporter.send(provider, recipient, address, message)
        with self._lock:
            self._done.append(Unsubscribe(provider, recipient, "mailto", address, None))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
