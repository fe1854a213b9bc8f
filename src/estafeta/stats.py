"""Sending statistics, read from the event log: counts and rates per time bucket and dimension.

Every event type is counted under its own name (so types added later appear without changes), plus:
`sent` (recipients queued), `bounced_hard` / `bounced_soft` (a `bounced` event's `data.bounce.kind`;
asynchronous `soft_bounced` reports count as soft) and `opened_machine` / `clicked_machine` (hits flagged
as automated; they are included in `opened` / `clicked`).

Dimensions: `domain` (sending domain of the From address), `stream`, `campaign` (metadata `campaign_id`,
else a `campaign:<id>` tag), `provider` (the recipient's mailbox provider: known consumer domains, else
the MX host that accepted the mail, else the recipient domain itself).
Rates: bounce = hard bounces / (delivered + bounced); complaint = complaints / delivered.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from estafeta.store import platform_stats as platform_store
from estafeta.store import stats as store
from estafeta.store.db import Database

Bucket = Literal["hour", "day", "none"]
DIMENSIONS = ("domain", "stream", "campaign", "provider")
COUNTS = (
    "sent",
    "delivered",
    "deferred",
    "bounced",
    "bounced_hard",
    "bounced_soft",
    "complained",
    "opened",
    "opened_machine",
    "clicked",
    "clicked_machine",
    "unsubscribed",
)

_DOMAIN_PROVIDERS = {
    "google": ("gmail.com", "googlemail.com"),
    "microsoft": ("outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk", "outlook.de"),
    "yahoo": ("yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "yahoo.co.uk", "yahoo.fr"),
    "apple": ("icloud.com", "me.com", "mac.com"),
    "gmx": ("gmx.de", "gmx.net", "gmx.com", "web.de"),
    "proton": ("proton.me", "protonmail.com"),
    "mailru": ("mail.ru", "bk.ru", "inbox.ru", "list.ru"),
    "yandex": ("yandex.ru", "yandex.com", "ya.ru"),
}
PROVIDER_OF_DOMAIN = {domain: name for name, domains in _DOMAIN_PROVIDERS.items() for domain in domains}
# MX host suffix → provider, for company domains hosted at a big provider.
MX_PROVIDERS = (
    ("google.com", "google"),
    ("googlemail.com", "google"),
    ("outlook.com", "microsoft"),
    ("yahoodns.net", "yahoo"),
    ("icloud.com", "apple"),
    ("gmx.net", "gmx"),
    ("protonmail.ch", "proton"),
    ("mail.ru", "mailru"),
    ("yandex.net", "yandex"),
)


def provider_of(domain: str | None, mx: str | None = None) -> str | None:
    if not domain:
        return None
    if domain in PROVIDER_OF_DOMAIN:
        return PROVIDER_OF_DOMAIN[domain]
    host = (mx or "").lower().rstrip(".")
    for suffix, name in MX_PROVIDERS:
        if host == suffix or host.endswith("." + suffix):
            return name
    return domain


def campaign_of(tags_json: str | None, campaign_id: str | None) -> str | None:
    if campaign_id:
        return campaign_id
    try:
        tags = json.loads(tags_json) if tags_json else []
    except ValueError:
        return None
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, str) and tag.startswith("campaign:"):
            return tag.removeprefix("campaign:")
    return None


def rates(counts: dict[str, int]) -> dict[str, float | None]:
    """None where the denominator is zero."""
    delivered = counts.get("delivered", 0)
    attempted = delivered + counts.get("bounced", 0)
    return {
        "bounce": counts.get("bounced_hard", 0) / attempted if attempted else None,
        "complaint": counts.get("complained", 0) / delivered if delivered else None,
    }


def _bucket_start(hour: datetime, bucket: Bucket) -> datetime | None:
    if bucket == "none":
        return None
    if bucket == "day":
        return hour.replace(hour=0)
    return hour


def _add(counts: Counter[str], row: store.CountRow) -> None:
    counts[row.type] += row.count
    if row.type == "queued":
        counts["sent"] += row.count
    elif row.type == "bounced":
        counts["bounced_hard" if row.bounce_kind == "hard" else "bounced_soft"] += row.count
    elif row.type == "soft_bounced":
        counts["bounced_soft"] += row.count
    elif row.type in ("opened", "clicked") and row.machine:
        counts[f"{row.type}_machine"] += row.count


@dataclass
class Group:
    bucket: datetime | None
    dimensions: dict[str, str | None]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rates(self) -> dict[str, float | None]:
        return rates(self.counts)


def aggregate(
    rows: list[store.CountRow], mx: dict[str, str], group_by: list[str], bucket: Bucket
) -> tuple[list[Group], dict[str, int]]:
    """Fold raw counts into groups (sorted by bucket, then dimensions) and the grand total."""
    groups: dict[tuple[object, ...], Counter[str]] = {}
    total: Counter[str] = Counter()
    for row in rows:
        values = {
            "domain": row.from_address.rpartition("@")[2].lower() if row.from_address else None,
            "stream": row.stream,
            "campaign": campaign_of(row.tags, row.campaign),
            "provider": provider_of(row.recipient_domain, mx.get(row.recipient_domain or "")),
        }
        key = (_bucket_start(row.hour, bucket), *(values[d] for d in group_by))
        _add(groups.setdefault(key, Counter()), row)
        _add(total, row)

    def order(key: tuple[object, ...]) -> tuple[object, ...]:
        return tuple((value is None, str(value)) for value in key)

    names = list(_complete(total))
    out = [
        Group(key[0], dict(zip(group_by, key[1:], strict=True)), _complete(counts, names))  # type: ignore[arg-type]
        for key, counts in sorted(groups.items(), key=lambda item: order(item[0]))
    ]
    return out, _complete(total)


def _complete(counts: Counter[str], names: Iterable[str] = COUNTS) -> dict[str, int]:
    """Every group names the same counts, zero where nothing happened."""
    return {**dict.fromkeys(names, 0), **counts}


@dataclass(frozen=True)
class Report:
    since: datetime
    until: datetime
    bucket: Bucket
    group_by: list[str]
    groups: list[Group]
    total: dict[str, int]
    postmaster: list[store.PostmasterRow]


def default_period(now: datetime, bucket: Bucket) -> tuple[datetime, datetime]:
    """The last 24 hours for hourly buckets, else the last 30 days; whole hours."""
    until = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return until - (timedelta(hours=24) if bucket == "hour" else timedelta(days=30)), until


async def report(
    db: Database, account_id: int, since: datetime, until: datetime, group_by: list[str], bucket: Bucket
) -> Report:
    rows = await db.run(store.event_counts, account_id, since, until)
    mx = await db.run(store.mx_hosts, account_id, since, until) if "provider" in group_by else {}
    groups, total = aggregate(rows, mx, group_by, bucket)
    domains = await db.run(store.sending_domains, account_id)
    first: date = since.astimezone(UTC).date()
    last: date = (until - timedelta(microseconds=1)).astimezone(UTC).date()
    figures = await db.run(store.postmaster, domains, first, last)
    return Report(since, until, bucket, group_by, groups, total, figures)


@dataclass(frozen=True)
class ProviderFigures:
    """One destination provider's delivery outcomes across every account (for operators)."""

    provider: str
    delivered: int
    deferred: int
    bounced: int
    hard_bounced: int
    throttled: int  # deferrals the receiver gave as rate limiting (e.g. 421 4.7.28)

    @property
    def deferral_rate(self) -> float | None:
        attempts = self.delivered + self.deferred + self.bounced
        return self.deferred / attempts if attempts else None

    @property
    def bounce_rate(self) -> float | None:
        final = self.delivered + self.bounced
        return self.hard_bounced / final if final else None


async def providers(db: Database, since: datetime, until: datetime) -> list[ProviderFigures]:
    """Outcomes per destination provider in [since, until), busiest first."""
    rows = await db.run(platform_store.outcomes_by_domain, since, until)
    mx: dict[str, str] = {r.domain: r.mx for r in rows if r.mx}
    found: dict[str, Counter[str]] = {}
    for row in rows:
        counts = found.setdefault(provider_of(row.domain, mx.get(row.domain)) or "?", Counter())
        counts[row.type] += row.count
        if row.type == "bounced" and row.bounce_kind == "hard":
            counts["hard"] += row.count
        if row.type == "deferred" and row.bounce_reason == "rate-limited":
            counts["throttled"] += row.count
    out = [
        ProviderFigures(name, c["delivered"], c["deferred"], c["bounced"], c["hard"], c["throttled"])
        for name, c in found.items()
    ]
    return sorted(out, key=lambda p: (-(p.delivered + p.deferred + p.bounced), p.provider))


@dataclass(frozen=True)
class QueueDepth:
    queued: int
    deferred: int
    held: int
    due: int  # queued or deferred entries whose time has come
    by_domain: list[tuple[str, int]]  # destinations with the most entries waiting


async def queue_depth(db: Database, now: datetime) -> QueueDepth:
    counts = await db.run(platform_store.queue_depth, now)
    waiting = await db.run(platform_store.waiting_by_domain)
    return QueueDepth(counts["queued"], counts["deferred"], counts["held"], counts["due"], waiting)
