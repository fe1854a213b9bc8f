"""Link checks at accept time: URL shorteners, long redirect chains and blocklisted domains.

Spammers hide where a link goes behind shorteners and redirect chains; a message with such a link is
held for an administrator instead of being sent. Each link's chain is followed by hand with httpx (HEAD,
then GET when HEAD is refused; redirects are never followed automatically), hop by hop up to
`max_redirects`, within a per-link and a per-message time budget. A link that cannot be reached is not a
reason to hold: only what is seen counts. With `links.http_proxy` set (the simulated world's web server in
a sandbox) every request goes through that proxy; links to the platform's own hosts (its public pages,
tracking domain) are not checked; without it, requests go only to public addresses
(`estafeta.public_http`): a link or a redirect to a host in a private, loopback or link-local range is
never requested.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import httpx

from estafeta import public_http
from estafeta.config import LinkSettings

_URL = re.compile(r"""https?://[^\s"'<>()\[\]{}]+""", re.IGNORECASE)
_HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_TRAILING = ".,;:!?"
_REDIRECTS = {301, 302, 303, 307, 308}
_CACHE_SIZE = 10_000


def extract_links(html_body: str | None, text_body: str | None) -> list[str]:
    """The distinct http(s) links of a message's HTML (`href`s and bare URLs) and text, in order."""
    found: list[str] = []
    if html_body:
        found += [html.unescape(h).strip() for h in _HREF.findall(html_body)]
        found += [html.unescape(u) for u in _URL.findall(html_body)]
    if text_body:
        found += _URL.findall(text_body)
    out: dict[str, None] = {}
    for link in found:
        link = link.rstrip(_TRAILING)
        if link.lower().startswith(("http://", "https://")):
            out.setdefault(link, None)
    return list(out)


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().rstrip(".")


def _listed(host: str, domains: list[str]) -> str | None:
    """The listed domain `host` is or falls under."""
    for domain in domains:
        domain = domain.lower().rstrip(".")
        if host == domain or host.endswith("." + domain):
            return domain
    return None


class LinkChecker:
    """Checks links; results per URL are remembered (campaigns repeat the same links many times)."""

    def __init__(self, settings: LinkSettings, own_hosts: Callable[[], set[str]] | None = None) -> None:
        self.settings = settings
        self.own_hosts = own_hosts or set
        self._seen: dict[str, list[str]] = {}

    async def check(self, html_body: str | None, text_body: str | None) -> list[str]:
        """Reasons to hold the message (empty: none)."""
        return await self.check_links(extract_links(html_body, text_body) if self.settings.enabled else [])

    async def check_links(self, found: list[str]) -> list[str]:
        """Reasons to hold a message with these links (`extract_links`, which callers may run off the event
        loop; empty: none)."""
        if not self.settings.enabled or not found:  # most messages have no link: nothing to work out
            return []
        own = self.own_hosts()
        links = [link for link in found if _host(link) not in own]
        reasons: list[str] = []
        to_follow: list[str] = []
        for link in links:
            if link in self._seen:
                reasons += self._seen[link]
                continue
            static = self._static(link)
            if static or not self.settings.follow_redirects:
                self._remember(link, static)
                reasons += static
            else:
                to_follow.append(link)
        if to_follow:
            reasons += await self._follow_all(to_follow[: self.settings.max_links])
        return list(dict.fromkeys(reasons))

    def _static(self, url: str) -> list[str]:
        host = _host(url)
        reasons = []
        shortener = _listed(host, self.settings.shorteners)
        if shortener:
            reasons.append(f"link {url} uses the URL shortener {shortener}")
        blocked = _listed(host, self.settings.blocklist)
        if blocked:
            reasons.append(f"link {url} points to the blocklisted domain {blocked}")
        return reasons

    def _remember(self, url: str, reasons: list[str]) -> None:
        if len(self._seen) >= _CACHE_SIZE:
            self._seen.pop(next(iter(self._seen)))
        self._seen[url] = reasons

    async def _follow_all(self, links: list[str]) -> list[str]:
        s = self.settings
        reasons: list[str] = []
        timeout = httpx.Timeout(s.link_timeout)
        if s.http_proxy is not None:
            client = httpx.AsyncClient(
                proxy=s.http_proxy, timeout=timeout, follow_redirects=False, trust_env=False
            )
        else:  # senders choose these URLs: never let them point the platform into its own network
            client = public_http.client(timeout, httpx.Limits(max_connections=10), allow_private=False)
        async with client:
            try:
                async with asyncio.timeout(s.total_timeout):
                    for link in links:
                        found = await self._follow(client, link)
                        if found is not None:
                            self._remember(link, found)
                            reasons += found
            except TimeoutError:
                pass  # the budget is spent: what was seen so far counts
        return reasons

    async def _follow(self, client: httpx.AsyncClient, url: str) -> list[str] | None:
        """Reasons found along the chain; None when the link could not be checked."""
        s = self.settings
        hops: list[str] = []
        current = url
        try:
            async with asyncio.timeout(s.link_timeout):
                while True:
                    if s.http_proxy is None and public_http.private_target(current):
                        return None
                    response = await client.head(current)
                    if response.status_code in (405, 501):
                        response = await client.get(current)
                    location = response.headers.get("location")
                    if response.status_code not in _REDIRECTS or not location:
                        break
                    current = urljoin(current, location)
                    hops.append(current)
                    blocked = _listed(_host(current), s.blocklist)
                    if blocked:
                        return [f"link {url} redirects to the blocklisted domain {blocked}"]
                    if len(hops) > s.max_redirects:
                        return [f"link {url} redirects more than {s.max_redirects} times"]
        except (httpx.HTTPError, TimeoutError):
            return None
        return []
