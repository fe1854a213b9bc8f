"""The delivery engine: claims due queue entries, groups them by destination domain into lanes, and
sends them over reused SMTP sessions within each destination's concurrency and rate limits.

Each destination's limits (`delivery.default_limits`, `delivery.domain_limits`) hold across every node
of the platform when `redis.url` is set (`estafeta.limits`): a sender holds one of the destination's
connection slots (leased, renewed while the session lasts, so a killed node's slots expire) for as long as
its session is open, and takes a token from the destination's shared bucket before each message. An idle
session stays open for more mail (`delivery.idle_timeout`) only until a sender, on any node, waits for a
slot of its destination: then it closes and gives its slot up, so that the limit still counts every open
connection while no node's mail waits for another's idle one. A busy session gives way too, once it has
sent for `delivery.give_way_after` seconds: it closes after its current message and its lane's mail (still
claimed, its leases renewed) waits for a slot in turn, so that a node holding every slot takes turns with
the nodes waiting rather than make them wait until its own mail runs out; while nobody waits, it stays
open. When the shared limits cannot be reached, the destination's waiting mail is deferred untried
(temporary failure).

Destinations are kept apart: one domain holds at most `max_in_flight_per_domain` claimed entries (the
rest of its mail stays in the queue while others are claimed), and a destination that ends several
transactions in a row without a reply (time-outs, resets) has its waiting mail deferred at once, so a
dead or slow receiver costs its own mail a retry, never the other destinations their turn.

Each sender waits for its outcome to be committed (in a group commit, `estafeta.delivery.outcomes`)
before its next transaction, so a crash can only send again the deliveries whose replies had just been
read; leases of entries still held in memory are renewed, and on shutdown entries not yet attempted are
released so that nothing waits for a lease to expire.

Mail of a terminated account is never sent: the engine re-reads terminations at every turn of its claim
loop, in the claim's transaction (at once when woken, else within `delivery.poll_interval`), and checks
each entry's account right before its SMTP transaction (`estafeta.termination`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable

from estafeta import verp
from estafeta.bounces.classify import classify_reply
from estafeta.bounces.policy import DEFAULT_POLICY, Policy
from estafeta.bounces.reasons import bounce_data, retry_advised
from estafeta.clock import Clock, SystemClock
from estafeta.config import DestinationLimits, Settings
from estafeta.delivery.client import ConnectFailed, MxSession, Reply, open_session
from estafeta.delivery.helo import SourceNames
from estafeta.delivery.mta_sts import MtaSts
from estafeta.delivery.mx import DnsPermanentError, DnsTemporaryError, MxResolver
from estafeta.delivery.outcomes import OutcomeRecorder
from estafeta.delivery.pools import NoSendingAddress, SourcePools
from estafeta.delivery.tlsrpt import SessionCounter
from estafeta.limits import Limits, LimitsUnavailable
from estafeta.limits.memory import MemoryLimits
from estafeta.metrics import CommitWindow, Metrics
from estafeta.outcome import AttemptResult, Job
from estafeta.queue import AfterFinish, Queue
from estafeta.store.db import Database, DatabaseBusy
from estafeta.suppression import policy as suppression_policy
from estafeta.suppression import soft_rule
from estafeta.waits import wait_set

log = logging.getLogger("estafeta.delivery")

SESSIONS_FLUSH_INTERVAL = 5.0  # seconds between additions of TLS session counts to the database
# Seconds between tries for a destination's connection slot while all are taken, and between an idle
# session's looks for a sender waiting for its slot.
SLOT_POLL = 0.2
WISH_SECONDS = 3 * SLOT_POLL  # a waiter's wish for a slot outlives a few of its tries, not the waiter
# A session that gave way asks for a slot again only after this: the waiter, trying every SLOT_POLL, takes
# the freed slot first.
GIVEN_WAY_PAUSE = WISH_SECONDS
_senders = itertools.count()


def classified(
    job: Job, reply: Reply, extra: dict[str, object], policy: Policy = DEFAULT_POLICY
) -> AttemptResult:
    """An attempt result from an SMTP reply (or its absence), with the bounce classifier's verdict."""
    if reply.positive:
        return AttemptResult(job, True, reply.code, reply.text, False, dict(extra))
    verdict = classify_reply(reply.code, reply.text, stage=reply.stage, policy=policy)
    data = {**extra, "bounce": bounce_data(verdict)}
    return AttemptResult(job, False, reply.code, reply.text, retry_advised(verdict), data)


class Lane:
    """All in-memory work for one destination domain from one source address (None: the system's)."""

    def __init__(
        self, engine: DeliveryEngine, domain: str, limits: DestinationLimits, source: str | None = None
    ) -> None:
        self.engine = engine
        self.domain = domain
        self.source = source
        self.limits = limits
        self.jobs: deque[Job] = deque()
        self.senders: set[asyncio.Task[None]] = set()
        where = f"dest:{domain}|{source or ''}"
        self.slots_key, self.rate_key = f"{where}:sessions", f"{where}:rate"
        self.arrived = asyncio.Event()
        self.slot_turn = asyncio.Lock()  # senders waiting for a slot ask for it one at a time
        self.waiting = 0  # senders waiting for a slot
        self.resume_at = 0.0  # monotonic time before which no new session is opened (421, gave way)
        self.dropped = 0  # transactions in a row that ended without a reply

    def add(self, job: Job) -> None:
        self.jobs.append(job)
        self.arrived.set()
        self._spawn()

    def _spawn(self) -> None:
        while len(self.senders) < min(self.limits.concurrency, len(self.jobs)):
            task = asyncio.create_task(self._sender(), name=f"lane:{self.domain}")
            self.senders.add(task)
            task.add_done_callback(self._sender_done)

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        self.senders.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sender for %s failed", self.domain, exc_info=task.exception())
        if self.jobs and not self.engine.stopping:
            self._spawn()  # jobs came in while this sender was closing its idle session
        self.engine.lane_idle(self)

    async def _wait_for_job(self, connected: bool) -> bool:
        """Wait for a job; False when the sender should end instead: the engine stops, nothing came within
        `delivery.idle_timeout`, or its idle connection's slot is wanted by a sender waiting for one (on
        any node), who can use it now."""
        deadline = time.monotonic() + self.engine.settings.delivery.idle_timeout
        while not self.jobs:
            if self.engine.stopping:
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.arrived.clear()
            if await wait_set(self.arrived, min(left, SLOT_POLL) if connected else left):
                continue
            if connected and await self._slot_wanted():
                return False
        return True

    async def _slot_wanted(self) -> bool:
        try:
            return await self.engine.limits.wanted(self.slots_key)
        except LimitsUnavailable:  # then the slot's renewal fails too, which ends the session
            return False

    async def _fail_all(self, first: Job, result: Callable[[Job], AttemptResult]) -> None:
        """A destination-wide failure (DNS, no MX reachable) applies to every waiting entry alike."""
        jobs = [first, *self.jobs]
        self.jobs.clear()
        now = time.monotonic()
        await asyncio.gather(*(self.engine.record(result(job), now) for job in jobs))

    async def _defer_waiting(self, last: Reply) -> None:
        """The destination stopped answering: defer what waits for it without trying (no attempt counted)."""
        reason = f"not tried: {self.domain} ended {self.dropped} transactions in a row unanswered ({last})"
        jobs = list(self.jobs)
        self.jobs.clear()
        now = time.monotonic()
        await asyncio.gather(
            *(
                self.engine.record(
                    AttemptResult(job, False, None, reason, True, {"destination": "down"}, False), now
                )
                for job in jobs
            )
        )

    async def _open(self, job: Job) -> MxSession | None:
        engine = self.engine
        settings = engine.settings
        extra: dict[str, object] = {}
        try:
            hosts = await engine.resolver.resolve(self.domain)
            lookup = await engine.mta_sts.lookup(self.domain)
            if lookup.policy is not None and lookup.policy.mode != "none":
                extra["mta_sts"] = {"policy": lookup.policy.id, "mode": lookup.policy.mode}
            observe = engine.sessions.observer(self.domain, lookup) if settings.tls_reports.enabled else None
            session = await open_session(
                hosts,
                port=settings.delivery.smtp_port,
                local_hostname=engine.helo.helo(self.source),
                tls=settings.delivery.tls,
                connect_timeout=settings.delivery.connect_timeout,
                command_timeout=settings.delivery.command_timeout,
                source_address=self.source,
                policy=lookup.policy,
                verify=engine.mta_sts.tls,
                observe=observe,
            )
            session.details.update(extra)
            return session
        except DnsPermanentError as exc:
            reply = f"{exc.status} {exc.reason}"
            bounce = {
                "bounce": {
                    "kind": "hard",
                    "reason": "no-such-domain",
                    "status": exc.status,
                    "scope": "global",
                    "blame": "recipient",
                }
            }
            await self._fail_all(job, lambda j: AttemptResult(j, False, None, reply, False, dict(bounce)))
        except DnsTemporaryError as exc:
            text = str(exc)
            temporary = {"dns": "temporary"}
            await self._fail_all(job, lambda j: AttemptResult(j, False, None, text, True, dict(temporary)))
        except ConnectFailed as exc:
            refused = exc.reply
            await self._fail_all(job, lambda j: classified(j, refused, extra, engine.policy))
        return None

    async def _defer_unlimited(self, job: Job, error: LimitsUnavailable) -> None:
        """The shared limits cannot be asked: nothing is sent to this destination for now (fail closed)."""
        log.error("deferring mail for %s untried: %s", self.domain, error)
        jobs = [job, *self.jobs]
        self.jobs.clear()
        reason = f"not tried: {error}"
        now = time.monotonic()
        await asyncio.gather(
            *(
                self.engine.record(
                    AttemptResult(j, False, None, reason, True, {"limits": "unavailable"}, False), now
                )
                for j in jobs
            )
        )

    async def _slot(self, holder: str) -> bool:
        """Wait for one of the destination's connection slots (shared by every node), one sender of the
        lane asking at a time; False when the engine stops, or the lane's connected senders took its jobs,
        first."""
        engine = self.engine
        lease = engine.settings.delivery.slot_lease_seconds
        self.waiting += 1
        try:
            async with self.slot_turn:
                while True:
                    if engine.stopping or not self.jobs:
                        return False
                    limit = self.limits.concurrency
                    if await engine.limits.acquire(self.slots_key, holder, limit, lease):
                        break
                    # As many sessions (on any node) idle or past their turn give way as this lane can use.
                    wishes = min(self.waiting, len(self.jobs))
                    await engine.limits.want(self.slots_key, wishes, WISH_SECONDS)
                    await asyncio.sleep(SLOT_POLL)
        finally:
            self.waiting -= 1
        engine.slots[holder] = self.slots_key
        return True

    async def _let_slot_go(self, holder: str) -> None:
        if self.engine.slots.pop(holder, None) is not None:
            with contextlib.suppress(LimitsUnavailable):  # else its lease runs out on its own
                await self.engine.limits.release(self.slots_key, holder)

    async def _pace(self) -> None:
        """Take one token of the destination's rate (shared by every node), waiting for it if need be."""
        rate = self.limits.rate
        if rate <= 0:
            return
        burst = max(1.0, rate)
        while (wait := await self.engine.limits.take(self.rate_key, rate, burst)) > 0:
            await asyncio.sleep(wait)

    async def _sender(self) -> None:
        session: MxSession | None = None
        holder = f"{self.engine.owner}:{next(_senders)}"
        turn_ends = 0.0  # monotonic time from which the session looks for senders waiting for its slot
        try:
            while True:
                if not await self._wait_for_job(session is not None):
                    return
                if session is None:  # a slot first: the jobs stay with the lane's connected senders meanwhile
                    delay = self.resume_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    try:
                        if not await self._slot(holder):
                            return
                    except LimitsUnavailable as exc:
                        if self.jobs:
                            await self._defer_unlimited(self.jobs.popleft(), exc)
                        continue
                    if not self.jobs:
                        await self._let_slot_go(holder)
                        return
                    job = self.jobs.popleft()
                    session = await self._open(job)
                    if session is None:
                        await self._let_slot_go(holder)
                        continue
                    turn_ends = time.monotonic() + self.engine.settings.delivery.give_way_after
                else:
                    job = self.jobs.popleft()
                try:
                    await self._pace()
                except LimitsUnavailable as exc:
                    await self._defer_unlimited(job, exc)
                    continue
                if job.account_id in self.engine.queue.terminated:  # checked right before sending
                    self.engine.drop(job)
                    continue
                mail_from = verp.return_path(
                    job.delivery_id, self.engine.verp_secret, self.engine.settings.return_path_domain
                )
                reply = await session.send(mail_from, job.recipient, job.raw, job.smtputf8)
                replied_at = time.monotonic()
                extra = {"mx": session.mx.name, "ip": session.address, "tls": session.tls, **session.details}
                if self.source is not None:
                    extra["source_ip"] = self.source
                delivery = self.engine.settings.delivery
                if reply.code == 421 or reply.code is None:
                    self.resume_at = time.monotonic() + delivery.throttle_pause
                self.dropped = self.dropped + 1 if reply.code is None else 0
                # Recorded before anything else is sent on this connection: a crash can re-send at most
                # this one delivery of it.
                await self.engine.record(classified(job, reply, extra, self.engine.policy), replied_at)
                if self.dropped >= delivery.max_dropped_transactions and self.jobs:
                    await self._defer_waiting(reply)
                gives_way = False
                if self.jobs and replied_at >= turn_ends:  # (none left: `_wait_for_job` looks, idle)
                    turn_ends = replied_at + SLOT_POLL  # while nobody waits, looked at this often
                    gives_way = await self._slot_wanted()
                    if gives_way:  # the lane's jobs wait for a slot again, after the waiter took this one
                        self.resume_at = max(self.resume_at, time.monotonic() + GIVEN_WAY_PAUSE)
                if gives_way or not session.alive or holder in self.engine.lost_slots:
                    self.engine.lost_slots.discard(holder)
                    await session.close()
                    session = None
                    await self._let_slot_go(holder)
        finally:
            if session is not None:
                await session.close()
            await self._let_slot_go(holder)


class DeliveryEngine:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        resolver: MxResolver,
        verp_secret: bytes,
        owner: str | None = None,
        metrics: Metrics | None = None,
        *,
        sources: SourcePools | None = None,
        after_finish: AfterFinish | None = None,
        limits: Limits | None = None,
    ) -> None:
        """`sources` picks each entry's source address (the streams' IP pools); `after_finish` reacts to
        final outcomes in their transaction (reputation); `limits` holds the destinations' connection
        slots and rates (by default in this process only)."""
        self.settings = settings
        self.limits = limits or MemoryLimits(SystemClock())  # receivers count real seconds
        self.slots: dict[str, str] = {}  # connection slots held: holder → key
        self.lost_slots: set[str] = set()  # holders whose slot expired: their session ends
        self.metrics = metrics
        self.resolver = resolver
        self.verp_secret = verp_secret
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.queue = Queue(
            db, settings.delivery, clock, self.owner, soft_rule(settings.suppression), after_finish
        )
        self.policy = suppression_policy(settings.suppression)
        self.lanes: dict[tuple[str, str | None], Lane] = {}
        self.sources = sources or SourcePools(db, settings.ip_pools)
        self.helo = SourceNames(settings, resolver.resolver)
        self.mta_sts = MtaSts(db, settings.mta_sts, clock, resolver.resolver, resolver.addresses)
        self.sessions = SessionCounter(db, clock)
        self.in_flight: set[int] = set()
        self.held: Counter[str] = Counter()  # claimed entries per recipient domain, until recorded
        self.window = CommitWindow()
        if metrics is not None:
            metrics.commit_windows.append(lambda: self.window)
        self.recorder = OutcomeRecorder(self.queue, self.window)
        self.wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._claiming_done = asyncio.Event()
        self._running = False
        self.stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- feeding -------------------------------------------------------------------------------
    def notify(self) -> None:
        """New mail was queued: poll now instead of at the next interval."""
        self.wakeup.set()

    async def record(self, result: AttemptResult, replied_at: float) -> None:
        """Commit an attempt's outcome; returns once it is committed."""
        await self.recorder.record(result, replied_at)
        self.in_flight.discard(result.job.delivery_id)
        self._let_go(result.job.domain)
        if self.metrics is not None:
            self.metrics.delivery_attempt(result.delivered, result.retry)
        self._room.set()

    async def give_back(self, job: Job) -> None:
        """Release an entry not attempted (stopping) so that any worker may take it at once."""
        await self.queue.release([job.delivery_id])
        self.in_flight.discard(job.delivery_id)
        self._let_go(job.domain)

    def drop(self, job: Job) -> None:
        """Let go of an entry without an attempt: its account was terminated, which cancelled the entry and
        took its lease, so there is nothing to record."""
        self.in_flight.discard(job.delivery_id)
        self._let_go(job.domain)
        self._room.set()

    def _let_go(self, domain: str) -> None:
        """One entry of `domain` left memory. Once a domain that was held back is down to half its limit,
        claim again (at once, not at the next poll; not at every entry either, which would make a claim
        of each commit)."""
        self.held[domain] -= 1
        if self.held[domain] <= 0:
            del self.held[domain]
        if self.held[domain] == self.settings.delivery.max_in_flight_per_domain // 2:
            self.wakeup.set()

    def lane_idle(self, lane: Lane) -> None:
        key = (lane.domain, lane.source)
        if not lane.senders and not lane.jobs and self.lanes.get(key) is lane:
            del self.lanes[key]

    def _dispatch(self, job: Job) -> AttemptResult | None:
        """Hand `job` to its lane; or, when it cannot be sent from anywhere now, the result to record."""
        if job.delivery_id in self.in_flight:
            return None  # already ours (the clock jumped past our own lease): never send it twice
        self.in_flight.add(job.delivery_id)
        self.held[job.domain] += 1
        if job.account_id in self.queue.terminated:
            self.drop(job)
            return None
        try:
            source = self.sources.source_for(job, self.helo.usable)
        except NoSendingAddress as exc:
            reason = (
                f"no sending address of IP pool {exc.pool} passes the reverse-DNS check (PTR name resolving "
                "back to the address); see `estafeta doctor`"
            )
            return AttemptResult(job, False, None, reason, True, {"pool": exc.pool}, False)
        lane = self.lanes.get((job.domain, source))
        if lane is None:
            lane = self.lanes[(job.domain, source)] = Lane(
                self, job.domain, self.settings.delivery.limits_for(job.domain), source
            )
        lane.add(job)
        return None

    async def _claim_loop(self) -> None:
        delivery = self.settings.delivery
        while not self.stopping:
            room = delivery.max_in_flight - len(self.in_flight)
            full = [d for d, n in self.held.items() if n >= delivery.max_in_flight_per_domain]
            try:
                if room > 0:
                    jobs = await self.queue.claim(min(delivery.batch_size, room), full)
                else:
                    jobs = []
                    await self.queue.read_terminations()
            except (
                DatabaseBusy
            ):  # other writers held SQLite's lock past the busy timeout; nothing was claimed
                log.warning("delivery: the database is busy; claiming again shortly")
                await asyncio.sleep(delivery.poll_interval)
                continue
            if jobs:
                await self.sources.refresh()
                await self.helo.refresh()
            unsendable = [failed for job in jobs if (failed := self._dispatch(job)) is not None]
            now = time.monotonic()
            await asyncio.gather(*(self.record(failed, now) for failed in unsendable))
            if len(jobs) == delivery.batch_size:
                continue
            self.wakeup.clear()
            waiter = self._room if room <= 0 else self.wakeup
            await wait_set(waiter, delivery.poll_interval)
            self._room.clear()

    async def _sessions_loop(self) -> None:
        while True:
            await asyncio.sleep(SESSIONS_FLUSH_INTERVAL)
            try:
                await self.sessions.flush()
            except Exception:
                log.exception("TLS session counts not saved yet")

    async def _renew_loop(self) -> None:
        interval = self.settings.delivery.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.queue.renew(sorted(self.in_flight))
            except DatabaseBusy:  # the leases still run for two more intervals: renewed next round
                log.warning("delivery: the database is busy; leases renewed next round")

    async def _slots_loop(self) -> None:
        """Renew the connection slots of open sessions; a session whose slot could not be kept ends after
        its current message (another node may hold the slot now)."""
        lease = self.settings.delivery.slot_lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            for holder, key in list(self.slots.items()):
                try:
                    kept = await self.limits.renew(key, holder, lease)
                except LimitsUnavailable as exc:
                    log.error("connection slots not renewed: %s", exc)
                    kept = False
                if not kept:
                    self.lost_slots.add(holder)

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Deliver until `stop()` is called."""
        self._running = True
        await self.helo.refresh()  # at start: says which pool addresses fail, before any mail waits
        self._tasks = [
            asyncio.create_task(self._renew_loop(), name="delivery-renew"),
            asyncio.create_task(self._slots_loop(), name="delivery-slots"),
            asyncio.create_task(self._sessions_loop(), name="delivery-tls-sessions"),
        ]
        try:
            try:
                await self._claim_loop()
            finally:
                self._claiming_done.set()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let attempts under way finish, give back what was not attempted."""
        self.stopping = True
        self.wakeup.set()
        self._room.set()
        if self._running:
            await self._claiming_done.wait()  # a claim in progress still hands its entries to the lanes
        pending = [job for lane in self.lanes.values() for job in lane.jobs]
        for lane in self.lanes.values():
            lane.jobs.clear()
            lane.arrived.set()
        senders = [t for lane in self.lanes.values() for t in lane.senders]
        if senders:
            _, still = await asyncio.wait(senders, timeout=grace)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        await self.recorder.drain(grace)
        released = [job.delivery_id for job in pending]
        await self.queue.release(released)
        self.in_flight.difference_update(released)
        await self.sessions.flush()
        await self.mta_sts.close()
