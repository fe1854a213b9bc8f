"""Settings: `ESTAFETA_*` environment variables, an optional TOML file, and defaults.

Nested groups use a double underscore in the environment, e.g. `ESTAFETA_DELIVERY__SMTP_PORT=2525`.
The TOML file is named by `ESTAFETA_CONFIG` or `--config`; environment variables win over it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, IPvAnyAddress, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class DestinationLimits(BaseModel):
    """Throttling for one destination domain (or the default for all)."""

    concurrency: int = Field(10, ge=1, le=200, description="simultaneous connections to the domain")
    rate: float = Field(0, ge=0, description="messages per second to the domain; 0 means unlimited")


class DeliverySettings(BaseModel):
    smtp_port: int = Field(25, description="port of receiving MX servers")
    tls: Literal["opportunistic", "required", "off"] = "opportunistic"
    connect_timeout: float = 30.0
    command_timeout: float = 120.0
    idle_timeout: float = Field(5.0, description="seconds an unused connection to an MX is kept open")
    give_way_after: float = Field(
        10.0,
        gt=0,
        description="seconds a connection keeps sending before it gives its destination slot to a sender (on "
        "any node) waiting for one: it then closes after its current message, and its mail waits for a slot "
        "in turn; a connection nobody waits for is reused as long as there is mail",
    )
    processes: int = Field(
        0,
        ge=0,
        le=64,
        description="delivery engines in child processes of `estafeta serve` (0 = in the serve process); "
        "with N cores, N - 1 lets accepting and delivering use them all",
    )
    batch_size: int = Field(200, ge=1, description="queue entries claimed at once")
    max_in_flight: int = Field(2000, ge=1, description="claimed entries held in memory at most")
    max_in_flight_per_domain: int = Field(
        200,
        ge=1,
        description="claimed entries one recipient domain may hold in memory; more of its mail waits in the "
        "queue, so that a slow or dead destination cannot take the slots of the others",
    )
    max_dropped_transactions: int = Field(
        3,
        ge=1,
        description="transactions in a row that a destination ends without a reply (time-out, reset) before "
        "the mail waiting for it is deferred rather than tried one time-out at a time",
    )
    lease_seconds: float = Field(
        300.0, gt=0, description="how long a claim is held before others may retry it"
    )
    slot_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="how long a destination connection slot is held unless renewed (a killed node's slots "
        "are free again after this)",
    )
    poll_interval: float = Field(0.5, gt=0, description="seconds between queue polls when idle")
    retry_schedule: list[float] = Field(
        default_factory=lambda: [300, 900, 3600, 4 * 3600, 8 * 3600, 12 * 3600],
        description="seconds before each retry; the last value repeats",
    )
    max_age: float = Field(5 * 24 * 3600, gt=0, description="seconds after which a deferred message bounces")
    throttle_pause: float = Field(5.0, ge=0, description="seconds a destination rests after a 421")
    default_limits: DestinationLimits = Field(default_factory=DestinationLimits)
    domain_limits: dict[str, DestinationLimits] = Field(default_factory=dict)
    reverse_dns: Literal["require", "warn"] = Field(
        "require",
        description="require: an ip_pools address whose PTR name does not resolve back to it (FCrDNS) is "
        "not used, and its mail waits; warn: it sends anyway, with a warning in the log",
    )

    def limits_for(self, domain: str) -> DestinationLimits:
        return self.domain_limits.get(domain, self.default_limits)


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8025
    max_batch: int = Field(500, ge=1, description="messages per POST /v1/messages at most")
    max_recipients: int = Field(
        100, ge=1, le=1000, description="recipients per message (to, cc and bcc together) at most, as smtp's"
    )
    max_message_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="largest composed message accepted (413 above it)"
    )
    max_request_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="largest request body; a larger one is refused with 413 before the API key is checked "
        "and without being read",
    )
    rate_per_second: float = Field(
        0,
        ge=0,
        description="requests per second per account (on every node together when redis.url is set); 0 = "
        "unlimited; over it: 429 with Retry-After",
    )
    rate_burst: int = Field(100, ge=1, description="requests an account may make at once, then the rate")


class FrontSettings(BaseModel):
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="processes serving the API (on the same port, SO_REUSEPORT) and the SMTP relay (the "
        "serve process accepts each session and hands it to the process serving the fewest), so that TLS, "
        "parsing and DKIM signing use every core; on SQLite and PostgreSQL (with N cores, N is a good start)",
    )


class SmtpSettings(BaseModel):
    """The submission relay for mail clients and applications (`estafeta serve` listens on both ports)."""

    enabled: bool = Field(True, description="run the relay under `estafeta serve`")
    host: str = "127.0.0.1"
    starttls_port: int = Field(587, ge=0, le=65535, description="submission with STARTTLS; 0 = any free port")
    implicit_tls_port: int = Field(465, ge=0, le=65535, description="submission over TLS; 0 = any free port")
    tls_cert: Path | None = Field(None, description="PEM certificate chain; unset = a self-signed one")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_dir: Path = Field(
        Path("estafeta-tls"), description="where the self-signed certificate is generated once and kept"
    )
    max_message_bytes: int = Field(25 * 1024 * 1024, ge=1024, description="largest message (SIZE)")
    max_recipients: int = Field(100, ge=1, le=1000, description="recipients per message at most, as api's")
    rate_per_second: float = Field(50.0, ge=0, description="messages per second per account; 0 = unlimited")
    rate_burst: int = Field(200, ge=1, description="messages an account may send at once, then the rate")
    max_connections_per_ip: int = Field(20, ge=1, description="connections open at once from one client IP")
    max_login_failures: int = Field(
        10, ge=1, description="failed logins from one client IP within login_failure_window, then 454 4.7.0"
    )
    max_login_failures_per_user: int = Field(
        10,
        ge=1,
        description="failed logins naming one username (from any address) within login_failure_window, "
        "then that username's logins are refused with 454 4.7.0 until the oldest failure ages out",
    )
    login_failure_window: float = Field(300.0, gt=0, description="seconds failed logins are remembered")
    idle_timeout: float = Field(
        300.0, gt=0, description="seconds a session may wait between commands, then 421 4.4.2 and closed"
    )
    max_commands_without_progress: int = Field(
        20,
        ge=1,
        description="NOOP, RSET, HELP, VRFY, EXPN, HELO, EHLO and unknown commands a session may send "
        "between two accepted messages, then 421 4.7.0 and closed",
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> SmtpSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("smtp.tls_cert and smtp.tls_key must be set together")
        return self


class SuppressionSettings(BaseModel):
    """When failures turn into suppression, and which addresses are known spam traps."""

    soft_bounce_limit: int = Field(
        3, ge=1, description="distinct messages that soft-failed for good before an address is suppressed"
    )
    soft_bounce_days: float = Field(7, gt=0, description="window, in days, in which those failures count")
    disabled_mailbox: Literal["global", "account", "none"] = Field(
        "none",
        description="what a disabled or suspended mailbox suppresses at once: the global list, the "
        "account's, or nothing (it counts towards soft_bounce_limit like other lasting soft failures)",
    )
    spam_traps: list[str] = Field(
        default_factory=list,
        description="known spam-trap addresses and domains: never mailed, suppressed platform-wide on a hit",
    )


class InboundSettings(BaseModel):
    """The listener that receives bounces and complaints for the return-path domain (its MX points here)."""

    enabled: bool = Field(False, description="run the listener (needs the return-path domain's MX here)")
    host: str = "127.0.0.1"
    port: int = Field(25, ge=0, le=65535, description="0 = any free port")
    fbl_address: str = Field("fbl", description="local part of the feedback-loop (ARF complaint) address")
    dmarc_address: str = Field(
        "dmarc", description="local part of the address for DMARC aggregate reports (the domains' rua)"
    )
    max_message_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="largest report accepted")
    platform_domains: list[str] = Field(
        default_factory=list,
        description="further domains of the platform whose abuse@ and postmaster@ this listener receives "
        "(besides the return-path and tracking domains); their MX must point here",
    )
    abuse_keep_bytes: int = Field(
        256 * 1024, ge=1024, description="how much of each message to abuse@ or postmaster@ is kept"
    )
    abuse_reports_per_hour: int = Field(
        60,
        ge=0,
        description="messages one sending network (IPv4 /24, IPv6 /64) may deliver to abuse@ and "
        "postmaster@ per hour, across the cluster; more are deferred (450 4.7.1); 0 = no limit",
    )
    starttls: bool = Field(
        True,
        description="offer STARTTLS (optional for senders) with smtp.tls_cert/tls_key, or else a "
        "self-signed certificate made at start, as receiving MX servers commonly do",
    )


class MtaStsSettings(BaseModel):
    """MTA-STS for outbound mail (RFC 8461): destinations that publish a policy get mail only over
    verified TLS to the MX hosts it names."""

    enabled: bool = Field(True, description="look up and apply destinations' MTA-STS policies")
    ca_file: Path | None = Field(
        None,
        description="PEM trust anchors added to the system's, for policy hosts, MX certificates and "
        "https: TLS reports (a sandbox's own certificate authority); never a way to switch checks off",
    )
    policy_port: int = Field(
        443,
        ge=1,
        le=65535,
        description="port of the mta-sts.<domain> policy hosts (only sandboxes change it)",
    )
    fetch_timeout: float = Field(10.0, gt=0, description="seconds a policy fetch may take")
    allow_private_addresses: bool = Field(
        False,
        description="fetch policies from, and POST TLS reports to, private or loopback addresses (the "
        "sandbox); off, such hosts are refused as for webhooks",
    )


class TlsReportSettings(BaseModel):
    """Daily TLS-RPT aggregate reports (RFC 8460) on outbound TLS sessions, sent to the `rua` each
    destination publishes at `_smtp._tls.<domain>`."""

    enabled: bool = Field(True, description="count sessions and send the reports")
    from_: str = Field(
        "tls-reports@notices.estafeta.test", alias="from", description="sender address of mailed reports"
    )
    organization: str = Field("Estafeta", description="organization-name in the reports")
    contact: str = Field("", description="contact-info in the reports; empty: the sender address")
    timeout: float = Field(30.0, gt=0, description="seconds an https: report POST may take")

    model_config = {"populate_by_name": True}


class DomainSettings(BaseModel):
    """Sending-domain verification: a domain sends only while its DNS records check out."""

    verification_grace_hours: float = Field(
        72,
        ge=0,
        description="hours a verified domain whose records broke keeps sending (state failing, with a "
        "domain_failing event and a review note) before it is unverified and its mail is refused",
    )
    recheck_minutes: float = Field(
        60, gt=0, description="minutes between the scheduler's re-checks of each domain's records"
    )
    dns_update: str | None = Field(
        None,
        description="host:port of a DNS server that takes RFC 2136 updates for the sending domains' "
        "zones; when set, `domains add` publishes the records there (the sandbox sets the world's DNS)",
    )


class LintSettings(BaseModel):
    """The compliance linter at accept time (`estafeta lint` checks files the same way)."""

    mode: Literal["warn", "block"] = Field(
        "warn",
        description="warn: accept and report findings (data.lint, the 202 response); block: refuse with 422 "
        "when any finding is an error",
    )


class ReputationSettings(BaseModel):
    """Rolling per-account metrics and the thresholds that warn, then pause broadcast sending."""

    enabled: bool = Field(True, description="warn and pause automatically (metrics are always shown)")

    window_messages: int = Field(
        1000, ge=1, description="metrics cover at most this many latest delivery outcomes per account"
    )
    window_hours: float = Field(168, gt=0, description="…and only outcomes of this many last hours")
    min_volume: int = Field(100, ge=1, description="outcomes needed before a rate counts")
    bounce_warning: float = Field(0.025, ge=0, le=1, description="hard-bounce rate that warns")
    bounce_pause: float = Field(0.05, ge=0, le=1, description="hard-bounce rate that pauses broadcast")
    complaint_warning: float = Field(0.0005, ge=0, le=1, description="complaint rate that warns")
    complaint_pause: float = Field(0.001, ge=0, le=1, description="complaint rate that pauses broadcast")
    trap_pause: int = Field(5, ge=0, description="spam-trap hits in the window that pause; 0 = never")
    abuse_report_weight: float = Field(
        1.0, ge=0, description="complaints one verified abuse report (mail to abuse@) counts as"
    )
    abuse_pause_categories: list[Literal["phishing", "malware", "spam", "other"]] = Field(
        default_factory=lambda: ["phishing", "malware"],
        description="verified abuse reports of these categories pause all of the account's sending at once",
    )


class WarmupSettings(BaseModel):
    """New accounts climb sending limits (recipients per rolling 24 hours) after automatic reviews."""

    tiers: list[int] = Field(
        default_factory=lambda: [1000, 5000, 10000, 25000],
        description="limits in order, then unlimited; empty = no limit",
    )
    review_at: float = Field(0.8, gt=0, le=1, description="share of the limit used that makes a review due")


class LinkSettings(BaseModel):
    """Link checks at accept time: shorteners, long redirect chains and blocklisted domains hold a message."""

    enabled: bool = True
    shorteners: list[str] = Field(
        default_factory=lambda: [
            "bit.ly",
            "tinyurl.com",
            "t.co",
            "goo.gl",
            "ow.ly",
            "is.gd",
            "buff.ly",
            "rebrand.ly",
            "cutt.ly",
            "shorturl.at",
            "tiny.cc",
            "rb.gy",
            "bl.ink",
            "t.ly",
            "s.id",
        ],
        description="URL-shortener domains (and their subdomains)",
    )
    blocklist: list[str] = Field(default_factory=list, description="domains no link may point to")
    max_redirects: int = Field(3, ge=0, description="redirect hops a link may take")
    follow_redirects: bool = Field(True, description="resolve each link's redirect chain with HTTP")
    http_proxy: str | None = Field(
        None, description="proxy for the redirect checks (the simulated world's web server in sandboxes)"
    )
    link_timeout: float = Field(3.0, gt=0, description="seconds one link's chain may take")
    total_timeout: float = Field(8.0, gt=0, description="seconds all of a message's links may take")
    max_links: int = Field(20, ge=1, description="links per message followed at most (the rest are listed)")


class NoticeSettings(BaseModel):
    """Reputation notices mailed to an account's contact address from the platform's own sender."""

    enabled: bool = True
    from_: str = Field(
        "notices@notices.estafeta.test", alias="from", description="sender address of the notices"
    )

    model_config = {"populate_by_name": True}


class AudienceSettings(BaseModel):
    """Lists, consent and campaigns."""

    confirm_days: float = Field(7, gt=0, description="days a double opt-in confirmation link stays valid")
    reconfirm_after_days: float = Field(
        180, ge=0, description="days without engagement before a re-confirmation mail; 0 = never"
    )
    reconfirm_grace_days: float = Field(
        14, gt=0, description="days to answer a re-confirmation before the subscription ends"
    )
    campaign_batch: int = Field(100, ge=1, le=500, description="campaign messages accepted per batch")
    recipients_chunk: int = Field(
        2000, ge=1, le=50_000, description="contacts fixed as a campaign's recipients per transaction"
    )
    lookahead: int = Field(
        1000,
        ge=1,
        description="campaign messages rendered ahead of delivery: an account's broadcast messages waiting "
        "for their first attempt stay under this, the rest wait as recipients",
    )
    tick_seconds: float = Field(1.0, gt=0, description="seconds between campaign runner rounds when idle")


class StreamTracking(BaseModel):
    """Whether a stream's HTML mail gets an open pixel and click-tracked links, unless overridden."""

    opens: bool = True
    clicks: bool = False


class TrackingSettings(BaseModel):
    """Open and click tracking through the platform's tracking domain (`GET /t/o/…`, `GET /t/c/…`)."""

    base_url: str = Field(
        "",
        description="public URL that serves /t/… (the tracking domain, e.g. https://track.example.net); "
        "empty: no tracking unless use_api_url",
    )
    use_api_url: bool = Field(False, description="tracking links use the API's own address (sandboxes)")
    transactional: StreamTracking = Field(default_factory=lambda: StreamTracking(opens=True, clicks=False))
    broadcast: StreamTracking = Field(default_factory=lambda: StreamTracking(opens=True, clicks=True))
    machine_open_seconds: float = Field(
        5.0, ge=0, description="an open this soon after delivery is flagged as a machine (scanner, proxy)"
    )
    machine_click_seconds: float = Field(
        1.0, ge=0, description="a click this soon after a click on another link of the message is a machine"
    )


class WebhookSettings(BaseModel):
    """Event delivery to customer endpoints (Standard Webhooks signatures)."""

    enabled: bool = Field(True, description="run the fan-out and dispatcher tasks under `estafeta serve`")
    timeout: float = Field(10.0, gt=0, description="seconds one POST may take, connect to last byte")
    retry_schedule: list[float] = Field(
        default_factory=lambda: [5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800],
        description="seconds before each retry; the last value repeats",
    )
    retry_for: float = Field(
        24 * 3600, gt=0, description="seconds a delivery is retried (last try at this age), then failed"
    )
    endpoint_concurrency: int = Field(
        8, ge=1, le=64, description="POSTs in flight per endpoint (events of one message are always in order)"
    )
    poll_interval: float = Field(0.5, gt=0, description="seconds between looks for new events and retries")
    batch_size: int = Field(500, ge=1, description="events fanned out, or deliveries claimed, at once")
    gap_grace: float = Field(
        10.0, gt=0, description="seconds an event id missing below newer ones is awaited (PostgreSQL)"
    )
    allow_private_addresses: bool = Field(
        False,
        description="POST to endpoints on private, loopback or link-local addresses (the sandbox; a "
        "platform whose accounts are all trusted and inside its network); off, such endpoints are refused",
    )


class MetricsSettings(BaseModel):
    """Prometheus metrics for operators: unauthenticated, so bind them where only Prometheus can reach."""

    enabled: bool = True
    port: int | None = Field(
        None, ge=0, le=65535, description="own listener on `host`; unset: served at /metrics on the API"
    )
    host: str = "127.0.0.1"


class PostmasterSource(BaseModel):
    """A receiver's Postmaster-Tools-like endpoint: `{url}/domains/{domain}/stats` answers JSON."""

    provider: str = Field(description="the provider's name in statistics, e.g. gmail.com")
    url: str = Field(description="base URL, e.g. https://postmaster.example/postmaster/gmail.com")


class RetentionSettings(BaseModel):
    """How long what only grows is kept; older rows are pruned by the scheduler, oldest first (0 = keep)."""

    message_bodies_days: float = Field(
        30, ge=0, description="bodies of messages whose recipients are all final (the record stays)"
    )
    webhook_deliveries_days: float = Field(30, ge=0, description="delivered and failed webhook deliveries")
    events_days: float = Field(
        400, ge=0, description="the event log: message history, statistics and reputation windows"
    )
    batch: int = Field(2000, ge=1, description="rows pruned per transaction")


class DoctorSettings(BaseModel):
    """What `estafeta doctor` compares the deployment with."""

    ntp_server: str = Field(
        "",
        description="NTP server (host or host:port, e.g. pool.ntp.org) this machine's clock is compared "
        "with; empty: only the database server's clock is compared (PostgreSQL)",
    )
    max_clock_skew: float = Field(
        2.0, gt=0, description="seconds this machine's clock may be off the NTP server's or the database's"
    )
    timeout: float = Field(5.0, gt=0, description="seconds each network check may take")


class PostmasterSettings(BaseModel):
    sources: list[PostmasterSource] = Field(default_factory=list, description="empty: nothing is polled")
    poll_interval: float = Field(3600.0, gt=0, description="seconds between polls")
    lookback_days: int = Field(7, ge=1, description="days of figures asked for on each poll")
    timeout: float = Field(10.0, gt=0)


class SchedulerSettings(BaseModel):
    interval: float = Field(
        60.0, gt=0, description="seconds per round of the periodic jobs; each round runs once across nodes"
    )


class ClusterSettings(BaseModel):
    cache_seconds: float = Field(
        30.0,
        gt=0,
        description="seconds a node keeps cached settings at most; changes reach every node at once on "
        "PostgreSQL (LISTEN/NOTIFY), this bounds staleness when a node cannot listen",
    )


class RedisSettings(BaseModel):
    """The Redis that holds limits shared by every node (docs/scaling.md); unset: each process limits
    itself."""

    url: str | None = Field(
        None, description="e.g. redis://127.0.0.1:6379/0; unset: limits are kept in each process"
    )
    key_prefix: str = Field("estafeta:", description="prefix of every key, so platforms can share a Redis")
    timeout: float = Field(
        1.0, gt=0, description="seconds a limit check may wait for Redis before the work is refused for now"
    )
    max_connections: int = Field(
        32, ge=1, description="connections to Redis per process; more checks at once wait for one"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ESTAFETA_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    database_url: str = "sqlite:///estafeta.db"
    hostname: str = Field(default_factory=socket.getfqdn, description="name used in EHLO and Received")
    return_path_domain: str = Field(
        "bounces.estafeta.test", description="domain of the VERP return path (bounces+token@domain)"
    )
    dns_servers: list[str] = Field(
        default_factory=list, description="resolvers as host or host:port; empty means the system's"
    )
    dkim_algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    dkim_rsa_bits: int = 2048
    feedback_id_sender: str = Field("estafeta", description="last field of the Feedback-ID header")
    sqlite_busy_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a SQLite writer waits for the write lock held by another process; then the API "
        "answers 503 with Retry-After and the relay 451 4.3.0",
    )
    api: ApiSettings = Field(default_factory=ApiSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    front: FrontSettings = Field(default_factory=FrontSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    suppression: SuppressionSettings = Field(default_factory=SuppressionSettings)
    inbound: InboundSettings = Field(default_factory=InboundSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    postmaster: PostmasterSettings = Field(default_factory=PostmasterSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    public_url: str | None = Field(
        None,
        description="base URL of the public pages (unsubscribe, preferences, forms); unset = the API's URL",
    )
    ip_pools: dict[str, list[IPvAnyAddress]] = Field(
        default_factory=dict,
        description="named sets of source IPs; a pool named after a stream is that stream's default",
    )
    mta_sts: MtaStsSettings = Field(default_factory=MtaStsSettings)
    tls_reports: TlsReportSettings = Field(default_factory=TlsReportSettings)
    lint: LintSettings = Field(default_factory=LintSettings)
    domains: DomainSettings = Field(default_factory=DomainSettings)
    audience: AudienceSettings = Field(default_factory=AudienceSettings)
    reputation: ReputationSettings = Field(default_factory=ReputationSettings)
    warmup: WarmupSettings = Field(default_factory=WarmupSettings)
    links: LinkSettings = Field(default_factory=LinkSettings)
    notices: NoticeSettings = Field(default_factory=NoticeSettings)
    doctor: DoctorSettings = Field(default_factory=DoctorSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)

    @property
    def dmarc_rua(self) -> str:
        """Where the platform receives DMARC aggregate reports: the `rua` its sending domains publish."""
        return f"{self.inbound.dmarc_address}@{self.return_path_domain}"

    @field_validator("database_url")
    @classmethod
    def _driver(cls, url: str) -> str:
        if url.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, url: str | None) -> str | None:
        return url.rstrip("/") if url else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("ESTAFETA_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from a TOML file (if given), the environment, then explicit overrides."""
    if config_file is not None:
        if not config_file.is_file():
            raise FileNotFoundError(f"settings file not found: {config_file}")
        os.environ["ESTAFETA_CONFIG"] = str(config_file)
    return Settings(**overrides)
