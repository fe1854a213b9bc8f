"""Tables. Timestamps are timezone-aware UTC; every id is 64-bit."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite only auto-increments INTEGER PRIMARY KEY
# Every id is a signed 64-bit integer on both backends (SQLite INTEGER, PostgreSQL BIGINT): anything larger
# names no row and must be refused before it reaches a query, where it would overflow.
MAX_ID = 2**63 - 1


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone, so it stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; all times are UTC-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class PlatformState(Base):
    """Key/value pairs the platform generates once, e.g. the secret that signs VERP tokens."""

    __tablename__ = "platform_state"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="active")
    email: Mapped[str | None] = mapped_column(String(320))  # where reputation notices go
    sending_tier: Mapped[int] = mapped_column(Integer, default=0)  # index into warmup.tiers; past it: none
    created_at: Mapped[datetime]
    # status "terminated": by whom (an operator), when and why; nothing of the account is sent any more
    terminated_at: Mapped[datetime | None]
    terminated_by: Mapped[str | None] = mapped_column(String(200))
    termination_reason: Mapped[str | None] = mapped_column(Text)


class ApiKey(Base):
    """API keys are shown once; only an argon2 hash of the secret part is kept."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200), default="")
    scope: Mapped[str] = mapped_column(String(10), default="full", server_default="full")  # send|read|full
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Domain(Base):
    """A sending domain owned by one account; its DKIM keys are `dkim_keys` rows."""

    __tablename__ = "domains"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime]


class DkimKey(Base):
    """One DKIM key of a sending domain under its selector.

    state: pending (not yet seen in DNS: never signs) → active (verified in DNS, signs) → retiring
    (replaced; still published while mail signed with it is unfinished) → retired (its record may go).
    """

    __tablename__ = "dkim_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    domain_id: Mapped[int] = mapped_column(BigId, ForeignKey("domains.id", ondelete="CASCADE"), index=True)
    selector: Mapped[str] = mapped_column(String(63))
    algorithm: Mapped[str] = mapped_column(String(20))
    private_key: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime]
    verified_at: Mapped[datetime | None]
    activated_at: Mapped[datetime | None]
    retiring_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("domain_id", "selector"),)


class DomainCheck(Base):
    """A sending domain's verification state and the last check of its DNS records (no row: pending)."""

    __tablename__ = "domain_checks"
    domain_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("domains.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(12))  # pending | verified | failing | unverified
    changed_at: Mapped[datetime]
    checked_at: Mapped[datetime | None] = mapped_column(index=True)
    failing_since: Mapped[datetime | None]
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Message(Base):
    """One accepted message: the signed bytes are stored once, recipients are queue entries."""

    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    stream: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(10))
    from_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text, default="")
    message_id_header: Mapped[str] = mapped_column(String(400), index=True)  # matches complaints (ARF)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    smtputf8: Mapped[bool] = mapped_column(Boolean, default=False)
    tags: Mapped[list[str]] = mapped_column(default=list)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # The DKIM keys (dkim_keys ids) it was signed with, space-separated and space-enclosed (" 3 7 "), so a
    # retiring key knows when no unfinished message depends on its record any more.
    dkim_keys: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime]


class WaitedBody(Base):
    """A message retention passed at its age limit while it was still waiting (held for review, or queued in
    a paused stream): its body is kept until every recipient is final, then emptied."""

    __tablename__ = "waited_bodies"
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)


class Delivery(Base):
    """The durable queue: one row per recipient, leased by a worker while it is being delivered."""

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(BigId)
    recipient: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(255))
    stream: Mapped[str] = mapped_column(String(20))
    # queued | deferred | delivered | bounced | suppressed | held | cancelled
    state: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (Index("ix_deliveries_due", "state", "next_attempt_at"),)


FAILURE_EVENTS = "type IN ('bounced', 'soft_bounced')"
QUEUED_EVENTS = "type = 'queued'"


class Event(Base):
    """Every state change of a message, in order; stats, webhooks and the dashboard read only this."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigId)
    message_id: Mapped[str | None] = mapped_column(String(40))
    delivery_id: Mapped[int | None] = mapped_column(BigInteger)
    recipient: Mapped[str | None] = mapped_column(String(320))
    type: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        Index("ix_events_account", "account_id", "id"),
        Index("ix_events_message", "message_id", "id"),
        Index("ix_events_account_time", "account_id", "created_at"),  # statistics by time range
        # Warm-up limits count an account's queued recipients over 24 hours in every storing transaction:
        # read from this index alone (`type` in it too, so SQLite need not read the row to check it), not
        # from each of the window's events of every type.
        Index(
            "ix_events_queued",
            "account_id",
            "created_at",
            "type",
            sqlite_where=text(QUEUED_EVENTS),
            postgresql_where=text(QUEUED_EVENTS),
        ),
        # The persistent-soft-bounce rule counts an address's failures; only failure events are indexed.
        Index(
            "ix_events_failures",
            "account_id",
            "recipient",
            sqlite_where=text(FAILURE_EVENTS),
            postgresql_where=text(FAILURE_EVENTS),
        ),
    )


class SmtpCredential(Base):
    """A username/password for the SMTP relay; only an argon2 hash of the password is kept."""

    __tablename__ = "smtp_credentials"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Suppression(Base):
    """An address or domain never to be mailed: for one account, or for all (`account_id` NULL = global).

    `value_key` is the lower-cased value; uniqueness holds per scope (the partial index covers the global
    scope, where NULL account ids would never collide in a plain unique constraint).
    """

    __tablename__ = "suppressions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10))  # address | domain
    value: Mapped[str] = mapped_column(String(320))
    value_key: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(30))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("account_id", "value_key", name="uq_suppressions_account"),
        Index(
            "uq_suppressions_global",
            "value_key",
            unique=True,
            sqlite_where=text("account_id IS NULL"),
            postgresql_where=text("account_id IS NULL"),
        ),
        Index("ix_suppressions_value", "value_key"),
    )


class SuppressionAudit(Base):
    """Who added or removed which suppression, when and why; rows are only ever appended."""

    __tablename__ = "suppression_audit"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int | None] = mapped_column(BigId)
    value: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(10))  # add | remove
    reason: Mapped[str] = mapped_column(String(30))
    actor: Mapped[str] = mapped_column(String(80))  # api:<key prefix> | admin:<key prefix> | cli | system
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime]

    __table_args__ = (Index("ix_suppression_audit_value", "account_id", "value"),)


class AdminKey(Base):
    """A platform-operator key (global suppression list and other admin endpoints); argon2-hashed."""

    __tablename__ = "admin_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class AuditEntry(Base):
    """One operator or security-relevant action: who, what, on which account, when, from where.

    Written in the transaction of the change it records, so neither exists without the other; never
    updated nor pruned.
    """

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(
        String(400)
    )  # admin-key:<prefix> | user:<id>/<email> | cli:<user> | system
    account_id: Mapped[int | None] = mapped_column(BigId)  # the account acted upon
    action: Mapped[str] = mapped_column(String(60))  # dotted, e.g. review.approve
    target: Mapped[str] = mapped_column(String(400))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    origin: Mapped[str] = mapped_column(String(64))  # client ip, or "cli" / "system"

    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_account", "account_id", "at"),
        Index("ix_audit_log_action", "action", "at"),
    )


class AccountStream(Base):
    """An account's settings for one stream (transactional or broadcast): its From domain and IP pool."""

    __tablename__ = "account_streams"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(20), primary_key=True)
    from_domain: Mapped[str] = mapped_column(String(255), default="")
    ip_pool: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime]


class MailingList(Base):
    """A list people subscribe to; `public_id` names it in the hosted subscription form's URL."""

    __tablename__ = "lists"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    from_address: Mapped[str] = mapped_column(String(400))
    double_opt_in: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_lists_account_name"),)


class Contact(Base):
    """A person known to an account, with free-form attributes; `email_key` is the lower-cased address."""

    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("account_id", "email_key", name="uq_contacts_account_email"),)


class Subscription(Base):
    """A contact on a list, with the consent behind it: where and when it was given and confirmed."""

    __tablename__ = "subscriptions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(14))  # unconfirmed | subscribed | unsubscribed
    consent_source: Mapped[str] = mapped_column(String(200))
    consent_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]
    unsubscribe_method: Mapped[str | None] = mapped_column(String(20))
    last_engaged_at: Mapped[datetime | None]
    reconfirm_sent_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("contact_id", "list_id", name="uq_subscriptions_contact_list"),
        Index("ix_subscriptions_list", "list_id", "status", "contact_id"),
    )


class Segment(Base):
    """A saved filter over a list's contacts by attribute (`conditions`, all or any of them)."""

    __tablename__ = "segments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    match: Mapped[str] = mapped_column(String(3), default="all")  # all | any
    conditions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]


class Campaign(Base):
    """A template sent to a list or segment; recipients are fixed when sending starts."""

    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10), default="regular")  # regular | reconfirm
    name: Mapped[str] = mapped_column(String(200))
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="SET NULL"))
    from_address: Mapped[str] = mapped_column(String(400))
    reply_to: Mapped[str] = mapped_column(String(400), default="")
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    text_body: Mapped[str | None] = mapped_column("text", Text)
    stream: Mapped[str] = mapped_column(String(20), default="broadcast")
    # draft | scheduled | sending | paused | sent | cancelled
    state: Mapped[str] = mapped_column(String(12), default="draft")
    scheduled_at: Mapped[datetime | None]
    rate: Mapped[float] = mapped_column(Float, default=50.0)
    error: Mapped[str] = mapped_column(Text, default="")
    # Why a paused campaign waits: sender (its own pause), standing (the account was paused or reached its
    # warm-up limit; it resumes when that is lifted) or error (a message was refused; the sender must act).
    paused_for: Mapped[str] = mapped_column(String(10), default="", server_default="")
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Recipients are fixed in chunks of contacts by id, each in its own short transaction: the cursor is the
    # last contact id done, so a crash resumes after it; `recipients_fixed_at` is set once all are.
    recipients_cursor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    recipients_fixed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_campaigns_state", "state"),)


class CampaignRecipient(Base):
    """One contact of a campaign; `state` is the progress cursor (pending → sent | skipped | failed).

    A row becomes `sent` in the transaction that stores its message, so pausing, resuming or a crash can
    never send it twice.
    """

    __tablename__ = "campaign_recipients"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(BigInteger)
    email: Mapped[str] = mapped_column(String(320))
    state: Mapped[str] = mapped_column(String(10), default="pending")
    reason: Mapped[str] = mapped_column(String(300), default="")
    message_id: Mapped[str | None] = mapped_column(String(40))
    unsubscribed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id", name="uq_campaign_recipients_contact"),
        Index("ix_campaign_recipients_progress", "campaign_id", "state", "id"),
    )


class TrackingPreference(Base):
    """An account's open/click tracking switches for one stream; without a row the settings' defaults hold."""

    __tablename__ = "tracking_preferences"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(20), primary_key=True)
    opens: Mapped[bool] = mapped_column(Boolean)
    clicks: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime]


class WebhookEndpoint(Base):
    """A customer URL that receives the account's events; `after_event_id` is where its stream starts."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    event_types: Mapped[list[str]] = mapped_column(default=list)  # empty: every type
    secret: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    after_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebhookDelivery(Base):
    """The webhook outbox and delivery log: one row per (endpoint, event), leased while being POSTed."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(BigId)
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[str | None] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON body, so retries and replays send the same
    state: Mapped[str] = mapped_column(String(10))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    retry_from: Mapped[datetime]  # start of the current retry period (fan-out or replay)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    response_snippet: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_order", "endpoint_id", "message_id", "id"),
        Index("ix_webhook_deliveries_log", "endpoint_id", "id"),
    )


class PostmasterStat(Base):
    """A receiver's daily figures for one sending domain, as its Postmaster-Tools-like service reports."""

    __tablename__ = "postmaster_stats"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider: Mapped[str] = mapped_column(String(100))
    domain: Mapped[str] = mapped_column(String(255))
    day: Mapped[date] = mapped_column(Date)
    messages: Mapped[int] = mapped_column(Integer)
    spam_rate: Mapped[float] = mapped_column(Float)
    dkim_pass_rate: Mapped[float] = mapped_column(Float)
    spf_pass_rate: Mapped[float] = mapped_column(Float)
    reputation: Mapped[str] = mapped_column(String(10))  # HIGH | MEDIUM | LOW | BAD
    fetched_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("provider", "domain", "day", name="uq_postmaster_stats_day"),)


class SendingStanding(Base):
    """An account's standing for one stream: `active | warning | paused | suspended` (no row: `active`).

    Mail of a `paused` or `suspended` stream waits in the queue, and new mail for it is refused.
    """

    __tablename__ = "sending_standing"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(20), primary_key=True)
    state: Mapped[str] = mapped_column(String(12), default="active")
    reason: Mapped[str] = mapped_column(Text, default="")
    changed_by: Mapped[str] = mapped_column(String(80), default="system")
    changed_at: Mapped[datetime]
    measured_after: Mapped[int | None] = mapped_column(BigInteger)  # after approval: metrics from this event


class Review(Base):
    """An account held for an administrator: why, its metrics then, the sender's answers, the decision."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    stream: Mapped[str] = mapped_column(String(20))  # broadcast | transactional | all
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10), default="open")  # open | approved | rejected
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    answers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(80))
    decided_at: Mapped[datetime | None]
    note: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_reviews_state", "state", "id"),)


class ReviewAudit(Base):
    """Every action on a review (opened, answered, approved, rejected, released…); only ever appended."""

    __tablename__ = "review_audit"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("reviews.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(80))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime]


class MtaStsPolicy(Base):
    """An MTA-STS policy a destination served (RFC 8461), kept per policy id: the newest one for a domain
    is the cached policy delivery applies until it expires; older ones name what TLS reports cover."""

    __tablename__ = "mta_sts_policies"
    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    policy_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    mode: Mapped[str] = mapped_column(String(10))  # enforce | testing | none
    mx: Mapped[list[str]] = mapped_column(default=list)
    max_age: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[datetime]
    expires_at: Mapped[datetime]

    __table_args__ = (Index("ix_mta_sts_policies_newest", "domain", "fetched_at"),)


class TlsSessionCount(Base):
    """Outbound SMTP sessions of one UTC day by destination, policy, outcome and hosts: what the daily
    TLS-RPT reports (RFC 8460) count. `result` is "success" or an RFC 8460 result type."""

    __tablename__ = "tls_session_counts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date)
    policy_domain: Mapped[str] = mapped_column(String(255))
    policy_type: Mapped[str] = mapped_column(String(20))  # sts | no-policy-found
    policy_id: Mapped[str] = mapped_column(String(32), default="")
    result: Mapped[str] = mapped_column(String(40))
    sending_ip: Mapped[str] = mapped_column(String(45), default="")
    mx_host: Mapped[str] = mapped_column(String(255), default="")
    receiving_ip: Mapped[str] = mapped_column(String(45), default="")
    detail: Mapped[str] = mapped_column(String(200), default="")  # failure-reason-code
    count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint(
            "day",
            "policy_domain",
            "policy_type",
            "policy_id",
            "result",
            "sending_ip",
            "mx_host",
            "receiving_ip",
            "detail",
            name="uq_tls_session_counts",
        ),
    )


class TlsReportSent(Base):
    """One destination's TLS-RPT report for one day: written before it is sent, so it is sent once."""

    __tablename__ = "tls_reports_sent"
    policy_domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    report_id: Mapped[str] = mapped_column(String(100))
    destinations: Mapped[list[str]] = mapped_column(default=list)
    outcome: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime]


class AbuseReport(Base):
    """A message mailed to `abuse@` or `postmaster@` a platform domain, the account and message it was
    matched to (none: it waits in the operators' inbox), and the message as received (up to a bound)."""

    __tablename__ = "abuse_reports"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime]
    mailbox: Mapped[str] = mapped_column(String(320))
    reporter: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(20))  # complaint, phishing, malware, spam, other
    account_id: Mapped[int | None] = mapped_column(BigId)
    message_id: Mapped[str | None] = mapped_column(String(40))
    recipient: Mapped[str | None] = mapped_column(String(320))
    matched_by: Mapped[str] = mapped_column(String(20), default="")
    excerpt: Mapped[str] = mapped_column(Text, default="")
    review_id: Mapped[int | None] = mapped_column(BigId)
    size: Mapped[int] = mapped_column(Integer)
    raw: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_abuse_reports_account", "account_id", "id"),)


class DmarcReport(Base):
    """A DMARC aggregate report (RFC 7489) a receiver mailed to the platform's rua address."""

    __tablename__ = "dmarc_reports"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(String(255))  # policy_published domain
    org_name: Mapped[str] = mapped_column(String(255))
    org_email: Mapped[str] = mapped_column(String(320), default="")
    report_id: Mapped[str] = mapped_column(String(255))
    begin_at: Mapped[datetime]
    end_at: Mapped[datetime]
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    messages: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("org_name", "report_id", name="uq_dmarc_reports_report"),
        Index("ix_dmarc_reports_domain", "domain", "end_at"),
    )


class DmarcRecord(Base):
    """One row of a DMARC aggregate report: messages from one source IP with one set of results."""

    __tablename__ = "dmarc_records"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("dmarc_reports.id", ondelete="CASCADE"), index=True)
    source_ip: Mapped[str] = mapped_column(String(45))
    ptr: Mapped[str] = mapped_column(String(255), default="")
    count: Mapped[int] = mapped_column(Integer)
    disposition: Mapped[str] = mapped_column(String(20), default="")
    dkim: Mapped[str] = mapped_column(String(10))  # DMARC-aligned DKIM: pass | fail
    spf: Mapped[str] = mapped_column(String(10))  # DMARC-aligned SPF: pass | fail
    header_from: Mapped[str] = mapped_column(String(255), default="")
    envelope_from: Mapped[str] = mapped_column(String(255), default="")
    auth_results: Mapped[dict[str, Any]] = mapped_column(default=dict)


class User(Base):
    """A person who signs in to the dashboard; only an argon2 hash of the password is kept.

    `operator` users run the platform (review queue, global suppression list, plans); others see the
    accounts they are members of.
    """

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    operator: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class Membership(Base):
    """A user's role in an account: owner (everything), developer (send and read) or viewer (read)."""

    __tablename__ = "memberships"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_memberships_account", "account_id"),)


class WebSession(Base):
    """A signed-in dashboard session; `id` is a SHA-256 of the token in the cookie (never the token)."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int | None] = mapped_column(BigId)  # the account being looked at
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]


class Invitation(Base):
    """An invitation to join an account with a role; the emailed link is signed and carries `nonce`."""

    __tablename__ = "invitations"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(10))
    nonce: Mapped[str] = mapped_column(String(64))
    invited_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Plan(Base):
    """A volume plan an operator assigns to accounts; a NULL limit is no limit."""

    __tablename__ = "plans"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    messages_per_month: Mapped[int | None] = mapped_column(BigInteger)
    messages_per_day: Mapped[int | None] = mapped_column(BigInteger)
    contacts: Mapped[int | None] = mapped_column(BigInteger)
    dedicated_pool: Mapped[bool] = mapped_column(Boolean, default=False)  # streams may use an own IP pool
    created_at: Mapped[datetime]


class AccountPlan(Base):
    """The plan an account is on (no row: no plan, no volume limits)."""

    __tablename__ = "account_plans"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    assigned_by: Mapped[str] = mapped_column(String(80))
    assigned_at: Mapped[datetime]


class UsageCounter(Base):
    """Recipients an account queued in one UTC day or calendar month (`period` day | month)."""

    __tablename__ = "usage_counters"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    period: Mapped[str] = mapped_column(String(5), primary_key=True)
    start: Mapped[date] = mapped_column(Date, primary_key=True)
    messages: Mapped[int] = mapped_column(BigInteger, default=0)
