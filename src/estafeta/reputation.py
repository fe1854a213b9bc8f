"""Sender reputation: rolling rates, automatic warning and pause, administrator review, warm-up limits.

One bad sender must not spoil the shared IPs and domains. Each account's latest outcomes (see
`ReputationSettings`) give a bounce rate (dead addresses and refusals of the sender itself / delivered +
bounced), a complaint rate (complaints / delivered), spam-trap hits and an unsubscribe rate; rates count once
`min_volume` outcomes are in. Over the warning thresholds the account is warned; over the pause thresholds its
broadcast stream is paused: queued broadcast mail waits (the queue does not claim it), new broadcast mail is
refused, and a review is opened for an administrator. Transactional mail keeps flowing unless an administrator
halts it.

Approving a review resumes the account (with metrics counted afresh), raises its warm-up tier when the
review was a warm-up one and releases held messages; rejecting it suspends the stream and cancels them.

Warm-up: an account may queue `warmup.tiers[tier]` recipients per rolling 24 hours; once it has used
`review_at` of that, the scheduler's `warmup_reviews` job (every minute, so well within the configured
hours) raises the tier when its rates are healthy, or opens a review when they are not.

Every change is an account-level event (`account_warning`, `account_paused`, `account_resumed`,
`account_suspended`, `review_requested`, `limit_raised`), so webhooks and notices follow by themselves.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from estafeta import audit
from estafeta.audit import SYSTEM, Actor
from estafeta.clock import Clock
from estafeta.config import Settings
from estafeta.store import abuse as abuse_store
from estafeta.store import campaigns as campaign_store
from estafeta.store import reputation as store
from estafeta.store.db import Database
from estafeta.store.events import NewEvent, record

DAY = timedelta(hours=24)
QUIET_FACTOR = 10  # an account whose new outcomes are all deliveries is evaluated this many times less often
HALTED = store.HALTED  # the standings in which a stream's mail waits and new mail is refused
QUESTIONS = ("collection", "consent", "content", "frequency")
"""The four questions a paused sender answers: how addresses are collected, how consent is obtained,
what is sent, and how often."""
HOW_TO_RESUME = (
    "answer the four review questions with POST /v1/account/review-answers (how you collect addresses, "
    "how you obtain consent, what you send and how often); an administrator then reviews the account"
)


class ReviewError(Exception):
    """A review action that cannot be taken (unknown review, decided already, nothing to answer)."""

    def __init__(self, reason: str, status: int = 409) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Measured:
    """An account's rolling metrics; `counted` is False below `min_volume` (the rates then do not act)."""

    delivered: int
    hard_bounced: int
    soft_bounced: int
    complaints: int
    trap_hits: int
    unsubscribes: int
    abuse_reports: int
    outcomes: int
    bounce_rate: float
    complaint_rate: float
    unsubscribe_rate: float
    counted: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    conn: Connection, account_id: int, now: datetime, settings: Settings, after_event: int | None
) -> Measured:
    r = settings.reputation
    c = store.counts(conn, account_id, now, r.window_messages, r.window_hours, after_event)
    outcomes = c.delivered + c.hard_bounced + c.soft_bounced
    complaints = c.complaints + c.abuse_reports * r.abuse_report_weight  # the documented weight
    return Measured(
        c.delivered,
        c.hard_bounced,
        c.soft_bounced,
        c.complaints,
        c.trap_hits,
        c.unsubscribes,
        c.abuse_reports,
        outcomes,
        round(c.hard_bounced / outcomes, 6) if outcomes else 0.0,
        round(complaints / c.delivered, 6) if c.delivered else 0.0,
        round(c.unsubscribes / c.delivered, 6) if c.delivered else 0.0,
        outcomes >= r.min_volume,
    )


def verdict(m: Measured, settings: Settings) -> tuple[str, str]:
    """`pause`, `warning` or `healthy`, with the reason in words."""
    r = settings.reputation
    if r.trap_pause and m.trap_hits >= r.trap_pause:
        return "pause", f"{m.trap_hits} spam-trap hits"
    if not m.counted:
        return "healthy", ""
    if m.bounce_rate > r.bounce_pause:
        return "pause", f"hard-bounce rate {m.bounce_rate:.2%} is over {r.bounce_pause:.2%}"
    if m.complaint_rate > r.complaint_pause:
        return "pause", f"complaint rate {m.complaint_rate:.3%} is over {r.complaint_pause:.3%}"
    if m.bounce_rate > r.bounce_warning:
        return "warning", f"hard-bounce rate {m.bounce_rate:.2%} is over {r.bounce_warning:.2%}"
    if m.complaint_rate > r.complaint_warning:
        return "warning", f"complaint rate {m.complaint_rate:.3%} is over {r.complaint_warning:.3%}"
    return "healthy", ""


def sending_limit(tier: int, settings: Settings) -> int | None:
    """Recipients per rolling 24 hours at this warm-up tier; None is unlimited."""
    tiers = settings.warmup.tiers
    return tiers[tier] if tier < len(tiers) else None


def evaluate(conn: Connection, account_id: int, now: datetime, settings: Settings) -> str | None:
    """Warn or pause the account's broadcast stream if its metrics call for it; returns the new state."""
    standing = store.standings(conn, account_id)["broadcast"]
    if not settings.reputation.enabled or standing.state in store.HALTED:
        return None
    m = measure(conn, account_id, now, settings, standing.measured_after)
    outcome, reason = verdict(m, settings)
    data = {"stream": "broadcast", "reason": reason, "metrics": m.as_dict()}
    if outcome == "pause":
        store.set_standing(conn, account_id, "broadcast", "paused", reason, "system", now)
        _account_event(conn, account_id, "account_paused", now, {**data, "how_to_resume": HOW_TO_RESUME})
        details = {"reason": reason}
        audit.record(
            conn, SYSTEM, "stream.pause", at=now, account_id=account_id, target="broadcast", details=details
        )
        _request_review(conn, account_id, "broadcast", f"paused: {reason}", m, now)
        return "paused"
    if outcome == "warning" and standing.state == "active":
        store.set_standing(conn, account_id, "broadcast", "warning", reason, "system", now)
        _account_event(conn, account_id, "account_warning", now, data)
        return "warning"
    if outcome == "healthy" and standing.state == "warning":
        store.set_standing(conn, account_id, "broadcast", "active", "", "system", now)
        return "active"
    return None


def _account_event(conn: Connection, account_id: int, kind: str, now: datetime, data: dict[str, Any]) -> None:
    """An account-level event (no message): reputation changes, reviews, limits."""
    record(conn, [NewEvent(account_id, kind, data)], now)


def _request_review(
    conn: Connection, account_id: int, stream: str, reason: str, m: Measured | None, now: datetime
) -> int:
    metrics = m.as_dict() if m is not None else {}
    review_id, opened = store.request_review(conn, account_id, stream, reason, metrics, now)
    if opened:
        _account_event(
            conn,
            account_id,
            "review_requested",
            now,
            {"review_id": review_id, "stream": stream, "reason": reason, "how_to_resume": HOW_TO_RESUME},
        )
    return review_id


def flag_for_review(conn: Connection, account_id: int, stream: str, reason: str, now: datetime) -> int:
    """Open (or extend) a review without pausing anything, e.g. for a held message."""
    return _request_review(conn, account_id, stream, reason, None, now)


class Reputation:
    """The platform's reputation governance. It reacts to delivery outcomes (`after_outcomes`, given to the
    queue) and complaints (`after_complaint`, given to the inbound listener) in their transactions; the API,
    the command line and the scheduler call the rest."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        *,
        mail_due: Callable[[], None] = lambda: None,
        campaigns_due: Callable[[], None] = lambda: None,
        evaluate_every: int = 20,
    ) -> None:
        """`mail_due` wakes delivery when released or resumed mail can go; `campaigns_due` wakes the
        campaign runner when paused campaigns resume."""
        self.db = db
        self.settings = settings
        self.clock = clock
        self.mail_due = mail_due
        self.campaigns_due = campaigns_due
        self.evaluate_every = evaluate_every
        self._pending: Counter[int] = Counter()  # outcomes since the account's last evaluation
        self._failing: set[int] = set()  # accounts with a failure among those outcomes
        self._counting = threading.Lock()  # outcome commits run on several database threads at once

    def after_outcomes(self, conn: Connection, outcomes: Iterable[tuple[int, bool]], now: datetime) -> None:
        """Count new (account, delivered) outcomes and evaluate an account every `evaluate_every` of them
        when a failure is among them, in the caller's transaction (so a pause lands before many more of a
        bad list go out).

        Deliveries alone never raise a rate (they add to the denominators and push older outcomes out of
        the window), so an account whose new outcomes are all deliveries is evaluated `QUIET_FACTOR` times
        less often: all that can change then is a warning lifted, or a sender reaching `min_volume` with
        its earlier bounces, both of which wait a few hundred deliveries at most. An evaluation reads the
        account's window of outcomes, which made it most of the cost of recording healthy mail."""
        with self._counting:
            for account_id, delivered in outcomes:
                self._pending[account_id] += 1
                if not delivered:
                    self._failing.add(account_id)
            due = [
                account_id
                for account_id, n in self._pending.items()
                if n >= self.evaluate_every * (1 if account_id in self._failing else QUIET_FACTOR)
            ]
            for account_id in due:
                del self._pending[account_id]
                self._failing.discard(account_id)
        for account_id in due:
            evaluate(conn, account_id, now, self.settings)

    def after_complaint(self, conn: Connection, account_id: int, now: datetime) -> None:
        """A complaint counts at once."""
        evaluate(conn, account_id, now, self.settings)

    def after_abuse_report(
        self, conn: Connection, report: abuse_store.ReportRow, verified: bool, now: datetime
    ) -> int | None:
        """A report mailed to abuse@ and matched to the account: a verified one counts at once (as
        `abuse_report_weight` complaints) and, in an `abuse_pause_categories` category, pauses all of the
        account's sending; every one opens or extends a review with the report as evidence. Returns the
        review id (None for a terminated account, which has nothing left to review)."""
        assert report.account_id is not None
        account = report.account_id
        if abuse_store.termination(conn, account) is not None:
            return None  # nothing of it can resume: no review to decide
        trace = "" if verified else " (an unverified trace: judge the sender)"
        reason = f"abuse report {report.id}: {report.category}, matched by {report.matched_by}{trace}"
        stream = store.message_stream(conn, report.message_id) if report.message_id else None
        if not verified:
            return _request_review(conn, account, stream or "all", reason, None, now)
        evaluate(conn, account, now, self.settings)
        if report.category not in self.settings.reputation.abuse_pause_categories:
            return _request_review(conn, account, stream or "all", reason, None, now)
        for name, standing in store.standings(conn, account).items():
            if standing.state not in store.HALTED:
                store.set_standing(conn, account, name, "paused", reason, "system", now)
                data = {"stream": name, "reason": reason, "how_to_resume": HOW_TO_RESUME}
                _account_event(conn, account, "account_paused", now, data)
        return _request_review(conn, account, "all", f"paused: {reason}", None, now)

    async def evaluate_now(self, account_id: int) -> str | None:
        return await self.db.run(evaluate, account_id, self.clock.now(), self.settings)

    # -- the sender's view ---------------------------------------------------------------------------

    def overview(self, conn: Connection, account_id: int, now: datetime) -> dict[str, Any]:
        """State per stream, metrics, warm-up limit and usage, the open review and what to do."""
        standings = store.standings(conn, account_id)
        m = measure(conn, account_id, now, self.settings, standings["broadcast"].measured_after)
        tier = store.tier(conn, account_id)
        limit = sending_limit(tier, self.settings)
        review = store.open_review(conn, account_id)
        halted = any(s.state in store.HALTED for s in standings.values())
        return {
            "streams": {
                s.stream: {"state": s.state, "reason": s.reason, "since": s.changed_at}
                for s in standings.values()
            },
            "metrics": m.as_dict(),
            "thresholds": self.settings.reputation.model_dump(),
            "limit": {"tier": tier, "per_24h": limit, "used_24h": store.usage(conn, account_id, now - DAY)},
            "review": _review_json(review) if review else None,
            "what_to_do": HOW_TO_RESUME if halted or review else "",
        }

    async def standing(self, account_id: int) -> dict[str, Any]:
        """`overview` now, in a transaction of its own."""
        return await self.db.run(self.overview, account_id, self.clock.now())

    async def answer(self, account_id: int, answers: dict[str, str], actor: str) -> int:
        """Record the sender's answers on its open review (or its latest one); returns the review id."""

        def work(conn: Connection) -> int:
            review = store.open_review(conn, account_id) or store.latest_review(conn, account_id)
            if review is None:
                raise ReviewError("there is no review for this account to answer")
            store.set_answers(conn, review.id, answers, actor, self.clock.now())
            return review.id

        return await self.db.run(work)

    # -- the administrator's actions -----------------------------------------------------------------

    async def reviews(self, state: str | None = "open") -> list[store.ReviewRow]:
        """The review queue (open reviews by default; None for every review)."""
        return await self.db.run(store.list_reviews, state)

    async def review(self, review_id: int) -> dict[str, Any]:
        """`detail` in a transaction of its own."""
        return await self.db.run(self.detail, review_id)

    def detail(self, conn: Connection, review_id: int) -> dict[str, Any]:
        review = store.get_review(conn, review_id)
        if review is None:
            raise ReviewError(f"no review {review_id}", status=404)
        now = self.clock.now()
        contact = store.contact(conn, review.account_id)
        return {
            **_review_json(review),
            "account": {
                "id": review.account_id,
                "name": contact[0] if contact else "",
                "email": contact[1] if contact else None,
            },
            "current": self.overview(conn, review.account_id, now),
            "recent_failures": store.recent_failures(conn, review.account_id),
            "sample_messages": store.sample_messages(conn, review.account_id),
            "abuse_reports": [
                asdict(r) for r in abuse_store.list_reports(conn, account_id=review.account_id, limit=20)
            ],
            "terminated": _termination_json(conn, review.account_id),
            "audit": [asdict(a) for a in store.audit_trail(conn, review_id)],
        }

    async def approve(self, review_id: int, actor: Actor, note: str = "") -> dict[str, Any]:
        """Resume what the review halted (metrics afresh), raise the tier after a warm-up review, release
        held messages."""
        result = await self.db.run(self._decide, review_id, "approved", actor, note)
        self._due(result["campaigns_resumed"])
        return result

    async def reject(self, review_id: int, actor: Actor, note: str = "") -> dict[str, Any]:
        """Suspend the reviewed stream(s) and cancel held messages."""
        return await self.db.run(self._decide, review_id, "rejected", actor, note)

    def _decide(self, conn: Connection, review_id: int, state: str, who: Actor, note: str) -> dict[str, Any]:
        now = self.clock.now()
        actor = who.name
        review = store.get_review(conn, review_id)
        if review is None:
            raise ReviewError(f"no review {review_id}", status=404)
        if state == "approved" and abuse_store.termination(conn, review.account_id) is not None:
            raise ReviewError(f"account {review.account_id} is terminated; nothing of it can resume")
        if not store.decide(conn, review_id, state, actor, note, now):
            raise ReviewError(f"review {review_id} was {review.state} already")
        account = review.account_id
        streams = ("transactional", "broadcast") if review.stream == "all" else (review.stream,)
        current = store.standings(conn, account)
        base = {"review_id": review_id, "note": note}
        if state == "approved":
            for stream in streams:
                if current[stream].state != "active":
                    store.set_standing(conn, account, stream, "active", "", actor, now, fresh_start=True)
                    _account_event(conn, account, "account_resumed", now, {**base, "stream": stream})
            if "warm-up" in review.reason:
                self._raise_tier(conn, account, now, who)
            resumed = self._resume_campaigns(conn, account, now)
            moved = store.set_entries(
                conn,
                account,
                now,
                from_states=("held",),
                to_state="queued",
                event="queued",
                data={"released_by": actor},
            )
        else:
            resumed = 0
            for stream in streams:
                store.set_standing(conn, account, stream, "suspended", note or review.reason, actor, now)
                _account_event(
                    conn,
                    account,
                    "account_suspended",
                    now,
                    {**base, "stream": stream, "reason": review.reason},
                )
            moved = store.set_entries(
                conn,
                account,
                now,
                from_states=("held",),
                to_state="cancelled",
                event="cancelled",
                data={"by": actor},
            )
        action = "review.approve" if state == "approved" else "review.reject"
        details = {
            "stream": review.stream,
            "note": note,
            "messages_moved": moved,
            "campaigns_resumed": resumed,
        }
        audit.record(
            conn, who, action, at=now, account_id=account, target=f"review:{review_id}", details=details
        )
        return {
            **_review_json(store.get_review(conn, review_id) or review),
            "messages_moved": moved,
            "campaigns_resumed": resumed,
        }

    def _resume_campaigns(
        self, conn: Connection, account_id: int, now: datetime, streams: set[str] | None = None
    ) -> int:
        """Resume the campaigns the account's standing paused (in `streams`, when the caller read them
        already), for each stream that is active again, once the account has room for a campaign batch
        under its warm-up limit; returns how many resumed."""
        if streams is None:
            streams = campaign_store.paused_for_standing(conn, account_id).get(account_id, set())
        if not streams:
            return 0
        limit = sending_limit(store.tier(conn, account_id), self.settings)
        # Room for a whole batch: the gate refuses a campaign batch that does not fit, and a campaign
        # resumed without room would only pause again.
        room = self.settings.audience.campaign_batch
        if limit is not None and store.usage(conn, account_id, now - DAY) + room > limit:
            return 0
        standings = store.standings(conn, account_id)
        return sum(
            campaign_store.resume_after_standing(conn, account_id, stream)
            for stream in sorted(streams)
            if standings[stream].state == "active"
        )

    async def resume_campaigns(self) -> int:
        """Scheduled: campaigns paused at the warm-up limit resume once the rolling day leaves room."""

        def work(conn: Connection) -> int:
            now = self.clock.now()
            paused = campaign_store.paused_for_standing(conn)
            return sum(
                self._resume_campaigns(conn, account, now, streams)
                for account, streams in sorted(paused.items())
            )

        resumed = await self.db.run(work)
        if resumed:
            self.campaigns_due()
        return resumed

    def _due(self, campaigns_resumed: int) -> None:
        """Released, resumed or re-activated mail may go now."""
        self.mail_due()
        if campaigns_resumed:
            self.campaigns_due()

    def _raise_tier(self, conn: Connection, account_id: int, now: datetime, actor: Actor) -> None:
        tier = store.tier(conn, account_id)
        if tier >= len(self.settings.warmup.tiers):
            return
        store.set_tier(conn, account_id, tier + 1)
        limit = {"tier": tier + 1, "per_24h": sending_limit(tier + 1, self.settings)}
        _account_event(conn, account_id, "limit_raised", now, {**limit, "by": actor.name})
        target = f"account:{account_id}"
        audit.record(
            conn, actor, "account.limit_raise", at=now, account_id=account_id, target=target, details=limit
        )

    async def set_stream(self, account_id: int, stream: str, state: str, reason: str, who: Actor) -> None:
        """An administrator pauses, suspends or resumes one stream of an account directly."""
        actor = who.name

        def work(conn: Connection) -> int:
            now = self.clock.now()
            if abuse_store.termination(conn, account_id) is not None:
                raise ReviewError(f"account {account_id} is terminated; its streams stay suspended")
            store.set_standing(
                conn, account_id, stream, state, reason, actor, now, fresh_start=state == "active"
            )
            kind = {
                "paused": "account_paused",
                "suspended": "account_suspended",
                "active": "account_resumed",
            }[state]
            data: dict[str, Any] = {"stream": stream, "reason": reason, "by": actor}
            if state == "paused":
                data["how_to_resume"] = HOW_TO_RESUME
                _request_review(conn, account_id, stream, f"paused by an administrator: {reason}", None, now)
            resumed = self._resume_campaigns(conn, account_id, now) if state == "active" else 0
            _account_event(conn, account_id, kind, now, data)
            action = {"paused": "stream.pause", "suspended": "stream.suspend", "active": "stream.resume"}[
                state
            ]
            details = {"reason": reason, "campaigns_resumed": resumed}
            audit.record(conn, who, action, at=now, account_id=account_id, target=stream, details=details)
            return resumed

        self._due(await self.db.run(work))

    # -- scheduled work ------------------------------------------------------------------------------

    async def warmup_reviews(self) -> int:
        """Review every account that used `review_at` of its limit: raise the tier when healthy, else open
        a review. Returns how many tiers were raised."""
        raised = await self.db.run(self._warmup_reviews, self.clock.now())
        if raised:
            self.campaigns_due()  # campaigns paused at the old limit may have resumed
        return raised

    def _warmup_reviews(self, conn: Connection, now: datetime) -> int:
        raised = 0
        for account_id, used in store.busy_accounts(conn, now - DAY).items():
            limit = sending_limit(store.tier(conn, account_id), self.settings)
            if limit is None or used < limit * self.settings.warmup.review_at:
                continue
            if store.open_review(conn, account_id) is not None:
                continue  # an administrator decides
            standing = store.standings(conn, account_id)["broadcast"]
            m = measure(conn, account_id, now, self.settings, standing.measured_after)
            outcome, reason = verdict(m, self.settings)
            if outcome == "healthy" and standing.state == "active":
                self._raise_tier(conn, account_id, now, SYSTEM)
                self._resume_campaigns(conn, account_id, now)
                raised += 1
            else:
                why = reason or f"broadcast stream is {standing.state}"
                _request_review(conn, account_id, "broadcast", f"warm-up: {why}", m, now)
        return raised


def _termination_json(conn: Connection, account_id: int) -> dict[str, Any] | None:
    found = abuse_store.termination(conn, account_id)
    return {"by": found.by, "reason": found.reason, "at": found.at} if found else None


def _review_json(review: store.ReviewRow) -> dict[str, Any]:
    return asdict(review)


def sender_state(standing: str, review: dict[str, Any] | None, stream: str) -> tuple[str, str]:
    """How a stream's standing reads to its sender (`ok`, `warning`, `paused`, `under review`,
    `suspended`) and what they should do about it; `review` is the account's open review (`overview`'s)."""
    if review is not None and review["stream"] not in (stream, "all"):
        review = None
    answered = review is not None and bool(review["answers"])
    if standing == "suspended":
        return "suspended", "Sending is suspended after a review; contact the platform's operators."
    if standing == "paused" and not answered:
        return "paused", f"Mail waits in the queue and new mail is refused. To resume, {HOW_TO_RESUME}."
    if standing == "paused" or review is not None:
        return "under review", (
            "Your answers are with the platform's operators, who decide shortly."
            if answered
            else f"An operator will look at the account; {HOW_TO_RESUME}."
        )
    if standing == "warning":
        return "warning", (
            "Bounce or complaint rates are close to the pause limits: clean the list (remove addresses "
            "that bounce, mail only people who asked for it) before sending more."
        )
    return "ok", ""
