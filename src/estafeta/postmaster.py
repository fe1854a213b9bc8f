"""Polling receivers' Postmaster-Tools-like services for what they see of our sending domains.

Each source (`settings.postmaster.sources`) answers `GET {url}/domains/{domain}/stats?since=YYYY-MM-DD`
with `{"days": [{"date", "messages", "spam_rate", "dkim_pass_rate", "spf_pass_rate",
"domain_reputation"}]}` (404: no figures for that domain). Figures are stored per provider, domain and day
and returned by the statistics API next to the platform's own counts.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, timedelta
from urllib.parse import quote

import httpx

from estafeta.clock import Clock
from estafeta.config import PostmasterSettings, PostmasterSource
from estafeta.store import stats as store
from estafeta.store.db import Database

log = logging.getLogger("estafeta.postmaster")
REPUTATIONS = ("HIGH", "MEDIUM", "LOW", "BAD")


class PostmasterPoller:
    def __init__(self, db: Database, settings: PostmasterSettings, clock: Clock) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock

    async def _fetch(
        self, client: httpx.AsyncClient, source: PostmasterSource, domain: str, since: date
    ) -> list[store.PostmasterRow]:
        url = f"{source.url.rstrip('/')}/domains/{quote(domain, safe='')}/stats"
        response = await client.get(url, params={"since": since.isoformat()})
        if response.status_code == 404:
            return []
        response.raise_for_status()
        now = self.clock.now()
        rows = []
        for day in response.json().get("days", []):
            reputation = str(day.get("domain_reputation", "")).upper()
            rows.append(
                store.PostmasterRow(
                    provider=source.provider,
                    domain=domain,
                    day=date.fromisoformat(day["date"]),
                    messages=int(day.get("messages", 0)),
                    spam_rate=float(day["spam_rate"]),
                    dkim_pass_rate=float(day["dkim_pass_rate"]),
                    spf_pass_rate=float(day["spf_pass_rate"]),
                    reputation=reputation if reputation in REPUTATIONS else "LOW",
                    fetched_at=now,
                )
            )
        return rows

    async def poll_once(self) -> int:
        """Ask every source about every sending domain; returns how many daily figures were stored."""
        if not self.settings.sources:
            return 0
        domains = await self.db.run(store.sending_domains)
        since = self.clock.now().date() - timedelta(days=self.settings.lookback_days)
        rows: list[store.PostmasterRow] = []
        async with httpx.AsyncClient(timeout=self.settings.timeout) as client:
            for source in self.settings.sources:
                for domain in domains:
                    try:
                        rows.extend(await self._fetch(client, source, domain, since))
                    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                        log.warning(
                            "postmaster figures of %s for %s unavailable: %s", source.provider, domain, exc
                        )
        await self.db.run(store.save_postmaster, rows)
        return len(rows)

    async def run(self) -> None:
        """Poll now and then every `poll_interval` seconds, until cancelled."""
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("postmaster poll failed")
            await asyncio.sleep(self.settings.poll_interval)
