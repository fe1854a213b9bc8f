"""Open and click tracking: whether a message is tracked, the signed tokens in its links, and recording hits.

A token is signed with the platform's tracking secret (itsdangerous) and names the message, the recipient
when the message had exactly one (a message is stored and DKIM-signed once for all its recipients, so a
multi-recipient message is tracked per message), and for clicks the target URL and the link's index. The
redirect only ever goes to the URL inside a valid token, so it cannot be turned into an open redirect.

Opens and clicks that look automated are still recorded but flagged `machine` with a `machine_reason`:
image proxies and privacy protection (which fetch images without a person looking), link scanners,
HEAD requests, opens within seconds of delivery, and clicks on several links of a message at once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from itsdangerous import BadData, URLSafeSerializer

from estafeta.clock import Clock
from estafeta.compose.tracking import add_pixel, rewrite_links, trackable
from estafeta.config import TrackingSettings
from estafeta.metrics import Metrics
from estafeta.store import tracking as store
from estafeta.store.db import Database

# A transparent 1x1 GIF.
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
PREFERENCE_CACHE_SECONDS = 30.0

# (pattern on the User-Agent, reason); the first match wins.
_MACHINE_AGENTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), reason)
    for pattern, reason in (
        (r"GoogleImageProxy|ggpht\.com", "image-proxy:google"),
        (r"YahooMailProxy", "image-proxy:yahoo"),
        (r"^Mozilla/5\.0$", "apple-mail-privacy-protection"),
        (
            r"BingPreview|SafeLinks|Microsoft Office Protection|Exchange Online Protection",
            "scanner:microsoft",
        ),
        (r"Barracuda", "scanner:barracuda"),
        (r"Proofpoint", "scanner:proofpoint"),
        (r"Mimecast", "scanner:mimecast"),
        (r"MessageLabs|Symantec", "scanner:symantec"),
        (r"python-requests|curl/|Wget/|Go-http-client|okhttp|Java/|libwww|HeadlessChrome", "http-library"),
        (r"bot\b|crawler|spider|scanner|preview", "bot"),
    )
)


@dataclass(frozen=True)
class TrackingChoice:
    opens: bool
    clicks: bool

    @property
    def any(self) -> bool:
        return self.opens or self.clicks


@dataclass(frozen=True)
class TrackingOverride:
    """A message's own choice (`POST /v1/messages` `tracking`); None leaves the account's default."""

    opens: bool | None = None
    clicks: bool | None = None


@dataclass(frozen=True)
class Hit:
    """What a valid token says."""

    kind: Literal["open", "click"]
    message_id: str
    recipient: str | None
    url: str | None = None
    link: int | None = None


class TokenSigner:
    def __init__(self, secret: bytes) -> None:
        self._serializer = URLSafeSerializer(secret, salt="estafeta.tracking")

    def open_token(self, message_id: str, recipient: str | None) -> str:
        return str(self._serializer.dumps(["o", message_id, recipient]))

    def click_token(self, message_id: str, recipient: str | None, url: str, link: int) -> str:
        return str(self._serializer.dumps(["c", message_id, recipient, url, link]))

    def read(self, token: str, kind: Literal["open", "click"]) -> Hit | None:
        """The hit a token stands for, or None if it is not a token of this kind signed by us."""
        try:
            value = self._serializer.loads(token)
        except BadData:
            return None
        if not isinstance(value, list) or not value or value[0] != kind[0]:
            return None
        if kind == "open" and len(value) == 3:
            _, message_id, recipient = value
            if isinstance(message_id, str) and isinstance(recipient, str | None):
                return Hit("open", message_id, recipient)
        if kind == "click" and len(value) == 5:
            _, message_id, recipient, url, link = value
            if (
                isinstance(message_id, str)
                and isinstance(recipient, str | None)
                and isinstance(url, str)
                and isinstance(link, int)
                and trackable(url)
            ):
                return Hit("click", message_id, recipient, url, link)
        return None


def agent_reason(user_agent: str, method: str) -> str | None:
    """Why a request is automated judging by itself alone, or None."""
    if method.upper() == "HEAD":
        return "head-request"
    if not user_agent.strip():
        return "no-user-agent"
    for pattern, reason in _MACHINE_AGENTS:
        if pattern.search(user_agent.strip()):
            return reason
    return None


def machine_open_reason(
    user_agent: str, method: str, seconds_since_delivery: float | None, window: float
) -> str | None:
    if reason := agent_reason(user_agent, method):
        return reason
    if seconds_since_delivery is not None and seconds_since_delivery < window:
        return "opened-right-after-delivery"
    return None


def machine_click_reason(user_agent: str, method: str, other_link_clicked_just_before: bool) -> str | None:
    if reason := agent_reason(user_agent, method):
        return reason
    if other_link_clicked_just_before:
        return "several-links-at-once"
    return None


class Tracker:
    """Decides whether a message is tracked, rewrites its HTML, and records opens and clicks as events."""

    def __init__(
        self,
        db: Database,
        settings: TrackingSettings,
        clock: Clock,
        secret: bytes,
        api_url: Callable[[], str | None],
        metrics: Metrics | None = None,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.tokens = TokenSigner(secret)
        self._api_url = api_url
        self._preferences: dict[int, tuple[dict[str, store.Preference], float]] = {}

    @property
    def base_url(self) -> str | None:
        """Where tracking links point, or None when tracking is off (no tracking domain configured)."""
        if self.settings.base_url:
            return self.settings.base_url.rstrip("/")
        return self._api_url() if self.settings.use_api_url else None

    async def _account_preferences(self, account_id: int) -> dict[str, store.Preference]:
        cached = self._preferences.get(account_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        found = await self.db.run(store.preferences, account_id)
        self._preferences[account_id] = (found, time.monotonic() + PREFERENCE_CACHE_SECONDS)
        return found

    async def choice(self, account_id: int, stream: str, override: TrackingOverride | None) -> TrackingChoice:
        """Message override, else the account's switch for the stream, else the settings' stream default."""
        if self.base_url is None:
            return TrackingChoice(False, False)
        account = (await self._account_preferences(account_id)).get(stream)
        default = account or getattr(self.settings, stream)
        override = override or TrackingOverride()
        return TrackingChoice(
            default.opens if override.opens is None else override.opens,
            default.clicks if override.clicks is None else override.clicks,
        )

    async def preferences(self, account_id: int) -> dict[str, TrackingChoice]:
        found = await self._account_preferences(account_id)
        return {
            stream: TrackingChoice(p.opens, p.clicks)
            for stream in ("transactional", "broadcast")
            for p in [found.get(stream) or getattr(self.settings, stream)]
        }

    async def set_preference(self, account_id: int, stream: str, choice: TrackingChoice) -> None:
        await self.db.run(
            store.set_preference, account_id, stream, choice.opens, choice.clicks, self.clock.now()
        )
        self._preferences.pop(account_id, None)

    def rewriter(self, message_id: str, choice: TrackingChoice) -> Callable[[str, str | None], str] | None:
        """The HTML rewrite for `compose`, or None when the message is not tracked."""
        base = self.base_url
        if base is None or not choice.any:
            return None

        def rewrite(markup: str, recipient: str | None) -> str:
            if choice.clicks:
                markup = rewrite_links(
                    markup,
                    lambda url, link: (
                        f"{base}/t/c/{self.tokens.click_token(message_id, recipient, url, link)}"
                    ),
                )
            if choice.opens:
                markup = add_pixel(markup, f"{base}/t/o/{self.tokens.open_token(message_id, recipient)}")
            return markup

        return rewrite

    async def record(self, hit: Hit, user_agent: str, method: str) -> dict[str, Any] | None:
        """Log an `opened` or `clicked` event and return its data; None when the message no longer exists."""
        now = self.clock.now()
        settings = self.settings

        def describe(context: store.HitContext) -> dict[str, Any]:
            data: dict[str, Any] = {"user_agent": user_agent[:500]}
            if hit.kind == "open":
                since = (now - context.delivered_at).total_seconds() if context.delivered_at else None
                reason = machine_open_reason(user_agent, method, since, settings.machine_open_seconds)
            else:
                data.update(url=hit.url, link=hit.link)
                others = bool(context.recent_click_links - {hit.link})
                reason = machine_click_reason(user_agent, method, others)
            data["machine"] = reason is not None
            if reason is not None:
                data["machine_reason"] = reason
            return data

        data = await self.db.run(
            store.record_hit,
            message_id=hit.message_id,
            recipient=hit.recipient,
            type="opened" if hit.kind == "open" else "clicked",
            now=now,
            clicks_since=now - timedelta(seconds=settings.machine_click_seconds)
            if hit.kind == "click"
            else None,
            describe=describe,
        )
        if data is not None and self.metrics is not None:
            self.metrics.tracking_hits.labels(hit.kind, str(data["machine"]).lower()).inc()
        return data
