"""The service core: one object, built from settings + database + clock, that owns every domain service.

The edges (`api/` routers, `cli/`, the SMTP relay, pages) parse input, call the core and render output;
every write goes through a service here, and each service keeps its own caches right. `platform.py` runs
servers around a core, and each delivery process builds a core of its own (`delivery_engine`).

Who reacts to what is wired here, at construction, and nowhere else:

* delivery outcomes → `reputation.after_outcomes` (given to each delivery engine's queue),
* complaints → `reputation.after_complaint` (given to the inbound listener by the platform),
* DMARC aggregate reports → `dmarc.ingest` (given to the inbound listener by the platform),
* mail to abuse@ and postmaster@ → `abuse.ingest` (given to the inbound listener by the platform), whose
  matched reports reach `reputation.after_abuse_report`,
* terminations → `terminations` forgets the account's cached keys and logins and wakes delivery,
* approvals and resumptions → `reputation` wakes delivery (`wake_delivery`) and the campaign runner,
* replays and test deliveries → `webhooks` wakes the webhook dispatcher,
* stream changes, key and relay-login revocations → `changes` (every node forgets those caches).

Services (attributes): `audit` (the audit log's reader; each service records its own actions in it, in the
transaction of the change), `accounts`, `domains`, `api_keys`, `admin_keys`, `smtp_credentials`, `streams`,
`suppressions`, `accepter` (the accept stage), `tracker`, `audience` (lists, contacts, consent, segments,
campaigns), `reputation` (standing, reviews, warm-up), `webhooks` (endpoint administration), `verification`
(each sending domain's DNS records checked, its state kept and re-checked; the accept path asks it whether a
domain may send), `messages` (reads, search and cancellations), `abuse` (the abuse desk: reports mailed to
abuse@ and postmaster@, matched to accounts), `terminations` (an operator terminates an account), `dmarc`
(the DMARC aggregate reports receivers mail back: kept by the inbound listener, summed up per sending
domain), `system_senders` (the accounts that send the platform's own mail), `plans` (volume plans and
metered usage; the accept gate charges `meter`), `users` (dashboard users, sessions, invitations),
`limits` (rates, connection slots and login lockouts, shared by every node through Redis when configured)
and `changes` (setting changes announced to every node, so their caches forget them); the workers the
platform runs (`webhook_dispatcher`, `audience.runner`, `postmaster`) and the scheduler's `jobs()` (among
them `tls_reports`, the daily TLS-RPT reports, and `verification.recheck`).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlsplit

import httpx

from estafeta import stats
from estafeta.abuse import AbuseDesk
from estafeta.accept import Accepter
from estafeta.accounts import Accounts
from estafeta.audience.service import Audience
from estafeta.audit import AuditLog
from estafeta.auth import AdminKeys, ApiKeys
from estafeta.changes import Changes
from estafeta.clock import Clock, SystemClock
from estafeta.config import Settings
from estafeta.delivery.engine import DeliveryEngine
from estafeta.delivery.mx import MxResolver, make_resolver
from estafeta.dkim_keys import DkimKeys
from estafeta.domains import DomainRow, Domains
from estafeta.limits import open_limits
from estafeta.messages import Messages
from estafeta.metrics import Metrics
from estafeta.notices import Notices
from estafeta.plans import DatabaseMeter, Plans
from estafeta.postmaster import PostmasterPoller
from estafeta.reports.dmarc import DmarcReports
from estafeta.reports.tls import TlsReports
from estafeta.reputation import Reputation
from estafeta.retention import Retention
from estafeta.scheduler import Job
from estafeta.smtp.credentials import SmtpCredentials
from estafeta.store import accounts as account_store
from estafeta.store.db import Database
from estafeta.store.db import DatabaseBusy as DatabaseBusy  # what the edges answer 503 / 451 to
from estafeta.streams import Streams
from estafeta.suppression import Suppressions
from estafeta.system_senders import SystemSenders
from estafeta.termination import Terminations
from estafeta.tracking import Tracker
from estafeta.users import Users
from estafeta.verification.records import DomainReport
from estafeta.verification.service import DomainVerification
from estafeta.webhook_endpoints import WebhookEndpoints
from estafeta.webhooks import Webhooks


class Urls:
    """Where the platform's own pages are reached: the settings, else the API's address once it listens
    (the platform sets `api` when it starts the API)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.api: str | None = None

    def api_url(self) -> str | None:
        return self.api

    def public(self) -> str:
        """Base of the links in list mail (unsubscribe, preferences, confirmation)."""
        return self.settings.public_url or self.api or ""

    def own_hosts(self) -> set[str]:
        """Hosts of the platform's own links (public pages, tracking, API): link checks trust them."""
        urls = [self.settings.public_url, self.settings.tracking.base_url, self.api]
        return {urlsplit(url).hostname or "" for url in urls if url} - {""}


def _nothing() -> None:
    """No delivery to wake in this process (the command line): running delivery polls the queue."""


METRICS_TIMEOUT = 10.0  # seconds a front child waits for the serve process's figures


class Core:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        db: Database | None = None,
        metrics: Metrics | None = None,
        wake_delivery: Callable[[], None] = _nothing,
        metrics_from: str | None = None,
    ) -> None:
        """`wake_delivery` is told when mail became due (accepted, released, resumed); the platform passes
        what wakes its delivery engine or processes. `metrics_from`: in a front child process, the serve
        process's metrics listener, whose figures (the whole node's) this process's /metrics answers with."""
        self.settings = settings
        self.clock = clock or SystemClock()
        self.db = db or Database(settings.database_url, settings.sqlite_busy_timeout)
        self.db.migrate()
        self.metrics = metrics or Metrics()
        self.urls = Urls(settings)
        self.wake_delivery = wake_delivery
        self.metrics_from = metrics_from
        self.verp_secret = self._secret("verp_secret")
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        db, clock = self.db, self.clock
        self.resolver = MxResolver(make_resolver(settings.dns_servers))
        self.limits = open_limits(settings.redis, self.clock)
        # Receivers count real seconds: destinations' rates and connection leases follow the wall clock
        # even when the platform's clock is set by hand.
        self.wire_limits = (
            self.limits if isinstance(self.clock, SystemClock) else open_limits(settings.redis, SystemClock())
        )
        self.changes = Changes(self.db, settings.cluster.cache_seconds)

        self.audit = AuditLog(db)
        self.accounts = Accounts(db, clock)
        self.verification = DomainVerification(db, settings, clock, self.resolver.resolver)
        self.domains = Domains(db, settings, clock, after_add=self.verification.setup)
        self.dkim_keys = DkimKeys(db, settings, clock, self.domains)
        self.api_keys = ApiKeys(db, clock, self.changes)
        self.admin_keys = AdminKeys(db, clock, self.changes)
        self.smtp_credentials = SmtpCredentials(db, clock, self.changes)
        self.streams = Streams(db, settings, clock, self.changes)
        self.meter = DatabaseMeter()
        self.plans = Plans(db, clock, self.meter)
        self.users = Users(db, clock, self._secret("dashboard_secret"))
        self.suppressions = Suppressions(db, clock)
        self.tracker = Tracker(
            db, settings.tracking, clock, self._secret("tracking_secret"), self.urls.api_url, self.metrics
        )
        self.accepter = Accepter(
            db,
            settings,
            clock,
            streams=self.streams,
            notify=wake_delivery,
            tracker=self.tracker,
            metrics=self.metrics,
            own_hosts=self.urls.own_hosts,
            meter=self.meter,
            sending_refusal=self.verification.refusal,
        )
        self.audience = Audience(
            db,
            settings,
            clock,
            self.accepter,
            self._secret("audience_secret"),
            self.urls.public,
            f"{self.owner}:campaigns",
        )
        self.reputation = Reputation(
            db, settings, clock, mail_due=wake_delivery, campaigns_due=self.audience.runner.wake
        )
        self.abuse = AbuseDesk(
            db, settings, clock, self.verp_secret, self.tracker.tokens, self.reputation.after_abuse_report
        )
        self.terminations = Terminations(
            db, clock, self.api_keys, self.smtp_credentials, stopped=wake_delivery
        )
        self.webhook_dispatcher = Webhooks(db, settings.webhooks, clock, metrics=self.metrics)
        self.webhooks = WebhookEndpoints(db, settings.webhooks, clock, self.webhook_dispatcher.wakeup.set)
        self.messages = Messages(db, clock)
        self.system_senders = SystemSenders(db, settings, self.accounts, self.domains)
        self.notices = Notices(db, settings, clock, self.accepter, self.system_senders)
        self.dmarc = DmarcReports(db, settings, clock, self.resolver.resolver, self.domains)
        self.tls_reports = TlsReports(
            db,
            settings,
            clock,
            self.resolver.resolver,
            self.resolver.addresses,
            self.accepter,
            self.system_senders,
        )
        self.retention = Retention(db, settings.retention, clock)
        self.postmaster = PostmasterPoller(db, settings.postmaster, clock)

    def _secret(self, name: str) -> bytes:
        """A secret shared by every process on this database (created by the first one)."""
        return bytes.fromhex(self.db.call(account_store.set_state_if_absent, name, secrets.token_hex(32)))

    def delivery_engine(self, resolver: MxResolver | None = None) -> DeliveryEngine:
        """A delivery engine on this core: its outcomes reach reputation in their transaction, its source
        addresses follow the streams' IP pools."""
        return DeliveryEngine(
            self.db,
            self.settings,
            self.clock,
            resolver or self.resolver,
            self.verp_secret,
            metrics=self.metrics,
            sources=self.streams.sources,
            after_finish=self.reputation.after_outcomes,
            limits=self.wire_limits,
        )

    def jobs(self) -> dict[str, Job]:
        """The scheduler's periodic work."""
        return {
            "warmup-reviews": self.reputation.warmup_reviews,
            "campaign-resumption": self.reputation.resume_campaigns,
            "notices": self.notices.send,
            "retention": self.retention.prune,
            "tls-reports": self.tls_reports.send,
            "dkim-keys": self.dkim_keys.check,
            "domain-checks": self.verification.recheck,
        }

    async def stats(
        self,
        account_id: int,
        since: datetime,
        until: datetime,
        dimensions: list[str],
        bucket: stats.Bucket,
    ) -> stats.Report:
        """The account's sending statistics, from the event log."""
        return await stats.report(self.db, account_id, since, until, dimensions, bucket)

    async def provider_figures(self, since: datetime, until: datetime) -> list[stats.ProviderFigures]:
        """Delivery outcomes per destination provider, every account (for operators)."""
        return await stats.providers(self.db, since, until)

    async def queue_depth(self) -> stats.QueueDepth:
        """What waits in the delivery queue now, and the destinations with the most of it."""
        return await stats.queue_depth(self.db, self.clock.now())

    async def dns_status(self, domain: DomainRow) -> DomainReport:
        """Each record a sending domain should publish, with what DNS answers now (nothing stored)."""
        return await self.verification.check(domain)

    async def metrics_text(self) -> bytes:
        """The Prometheus exposition, queue and webhook gauges read now."""
        if self.metrics_from is not None:
            async with httpx.AsyncClient(timeout=METRICS_TIMEOUT) as client:
                response = await client.get(self.metrics_from)
                response.raise_for_status()
                return response.content
        return await self.metrics.render(self.db)

    async def aclose(self) -> None:
        """Let go of the shared limits' connections, then of the database."""
        await self.limits.close()
        if self.wire_limits is not self.limits:
            await self.wire_limits.close()
        self.close()

    def close(self) -> None:
        self.db.close()
