"""The simulated providers' Postmaster Tools: daily figures per sending domain, served over HTTP.

Every accepted message is counted per (provider, From domain, day) with its DKIM result (aligned pass, as
the receivers check it), its SPF result (the envelope sender's domain against the client IP) and whether
the recipient reports it as spam (the providers' complainer mailboxes, which also mail an ARF report).
`GET /postmaster/{provider}/domains/{domain}/stats?since=YYYY-MM-DD` (or `?date=`) answers
`{"days": [{"date", "messages", "spam_rate", "dkim_pass_rate", "spf_pass_rate", "domain_reputation"}]}`,
404 when the provider saw nothing from the domain.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import date
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from urllib.parse import parse_qs, unquote, urlsplit

from estafeta.world.authentication import spf_result
from estafeta.world.http import LoopbackHttpServer
from estafeta.world.providers import Provider
from estafeta.world.receivers import Received
from estafeta.world.zone import WorldZone


def from_domain(message: bytes) -> str | None:
    end = message.find(b"\r\n\r\n")
    headers = BytesHeaderParser().parsebytes(message if end < 0 else message[: end + 2])
    addresses = getaddresses([str(headers.get("From", ""))])
    if len(addresses) != 1 or "@" not in addresses[0][1]:
        return None
    return addresses[0][1].rpartition("@")[2].lower()


def reputation(spam_rate: float, authenticated_rate: float) -> str:
    """Bands after Gmail's guidance: keep spam under 0.1%, never reach 0.3%; authenticate everything."""
    if spam_rate >= 0.01 or authenticated_rate < 0.5:
        return "BAD"
    if spam_rate >= 0.003 or authenticated_rate < 0.9:
        return "LOW"
    if spam_rate >= 0.001 or authenticated_rate < 0.98:
        return "MEDIUM"
    return "HIGH"


@dataclass
class DayCounts:
    messages: int = 0
    dkim_pass: int = 0
    spf_pass: int = 0
    authenticated: int = 0  # DKIM or SPF passed
    complaints: int = 0

    def as_json(self, day: date) -> dict[str, object]:
        spam = self.complaints / self.messages
        return {
            "date": day.isoformat(),
            "messages": self.messages,
            "spam_rate": round(spam, 6),
            "dkim_pass_rate": round(self.dkim_pass / self.messages, 6),
            "spf_pass_rate": round(self.spf_pass / self.messages, 6),
            "domain_reputation": reputation(spam, self.authenticated / self.messages),
        }


class PostmasterBook:
    """The counters behind the figures; fed by the MX handlers, read by the HTTP server and tests."""

    def __init__(self, zone: WorldZone) -> None:
        self._zone = zone
        self._lock = threading.Lock()
        self._days: dict[tuple[str, str, date], DayCounts] = {}

    def after_accept(self, provider: Provider, received: Received) -> None:
        domain = from_domain(received.data)
        if domain is None:
            return
        spf = spf_result(self._zone, received.mail_from, received.peer, received.helo) == "pass"
        dkim = received.dkim == "pass"
        count = len(received.rcpt_to)
        complaints = sum(1 for r in received.rcpt_to if provider.report_for(r) == "arf")
        with self._lock:
            day = self._days.setdefault((provider.domain, domain, received.received_at.date()), DayCounts())
            day.messages += count
            day.dkim_pass += count if dkim else 0
            day.spf_pass += count if spf else 0
            day.authenticated += count if dkim or spf else 0
            day.complaints += complaints

    def figures(self, provider: str, domain: str, since: date | None = None) -> list[dict[str, object]]:
        """Daily figures, oldest first."""
        with self._lock:
            found = [
                (day, counts)
                for (p, d, day), counts in self._days.items()
                if p == provider and d == domain.lower() and (since is None or day >= since)
            ]
            return [counts.as_json(day) for day, counts in sorted(found, key=lambda item: item[0])]

    def reset(self) -> None:
        with self._lock:
            self._days.clear()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class PostmasterServer(LoopbackHttpServer):
    """The figures as JSON over HTTP, like a mailbox provider's postmaster API."""

    def __init__(self, book: PostmasterBook, providers: list[str], host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self._book = book
        self._providers = set(providers)

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}/postmaster"

    def answer(self, method: str, target: str) -> tuple[int, dict[str, object]]:
        if method != "GET":
            return 405, {"error": "only GET"}
        parts = urlsplit(target)
        path = [unquote(p) for p in parts.path.strip("/").split("/")]
        if len(path) != 5 or path[0] != "postmaster" or path[2] != "domains" or path[4] != "stats":
            return 404, {"error": "no such resource"}
        provider, domain = path[1], path[3]
        if provider not in self._providers:
            return 404, {"error": f"no provider {provider}"}
        query = parse_qs(parts.query)
        try:
            since = date.fromisoformat(query["since"][0]) if "since" in query else None
            only = date.fromisoformat(query["date"][0]) if "date" in query else None
        except ValueError:
            return 400, {"error": "dates are YYYY-MM-DD"}
        days = self._book.figures(provider, domain, only or since)
        if only is not None:
            days = [d for d in days if d["date"] == only.isoformat()]
        if not days:
            return 404, {"error": f"no figures for {domain}"}
        return 200, {"provider": provider, "domain": domain, "days": days}

    def respond(self, method: str, target: str) -> tuple[str, dict[str, str], bytes]:
        return self._json(*self.answer(method, target))

    def malformed(self) -> tuple[str, dict[str, str], bytes]:
        return self._json(400, {"error": "malformed request"})

    @staticmethod
    def _json(status: int, body: dict[str, object]) -> tuple[str, dict[str, str], bytes]:
        return f"{status} {_REASONS[status]}", {"Content-Type": "application/json"}, json.dumps(body).encode()
