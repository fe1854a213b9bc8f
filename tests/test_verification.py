"""Sending-domain verification against the simulated internet's DNS server: each record reads ok, missing or
wrong (with the record to publish and what was found), and the domain's state follows its checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from estafeta.audit import SYSTEM
from estafeta.clock import ManualClock
from estafeta.config import Settings
from estafeta.core import Core
from estafeta.domains import dns_records
from estafeta.store.models import Event
from estafeta.verification.records import DomainReport, RecordCheck
from estafeta.verification.service import next_state
from estafeta.world import World
from tests.factories import sandbox_dns


@pytest.fixture
def names() -> Iterator[list[tuple[str, str]]]:
    """(name, type) sets a test adds to the shared world's zone, removed afterwards."""
    added: list[tuple[str, str]] = []
    yield added


@pytest.fixture
async def core(tmp_path: Path, dns_world: World) -> AsyncIterator[Core]:
    core = _core(tmp_path, dns_world)
    yield core
    core.close()


def _core(tmp_path: Path, world: World, **overrides: Any) -> Core:
    settings = Settings(
        **{
            "database_url": f"sqlite:///{tmp_path / 'verification.db'}",
            "dkim_algorithm": "ed25519-sha256",
            **sandbox_dns(world),
            **overrides,
        }
    )
    return Core(settings, clock=ManualClock())


def _by_check(report: DomainReport) -> dict[str, RecordCheck]:
    return {c.check.split(" ")[0] if c.check.startswith("DKIM") else c.check: c for c in report.checks}


def _put(world: World, name: str, rdtype: str, *values: str) -> None:
    world.zone.remove(name, rdtype)
    for value in values:
        world.zone.add(name, rdtype, value)


async def _add(core: Core, name: str) -> None:
    account = await core.accounts.find("shop") or await core.accounts.create("shop", actor=SYSTEM)
    await core.domains.add(account.id, name, actor=SYSTEM)


async def test_published_records_verify_and_each_reads_ok(core: Core) -> None:
    await _add(core, "ok.verify.test")
    status = await core.verification.status("ok.verify.test")
    assert status.state == "verified" and status.may_send
    assert status.report is not None
    checks = status.report.checks
    assert {c.status for c in checks} == {"ok"}, [(c.check, c.detail) for c in checks if c.status != "ok"]
    assert [c.check.split(" ")[0] for c in checks if c.required] == ["DKIM", "DMARC", "alignment"]
    row = await core.domains.lookup("ok.verify.test")
    published = {(r.name, r.value) for r in dns_records(row, core.settings) if r.type == "TXT"}
    assert {(c.name, c.expected) for c in checks if c.check.startswith(("DKIM", "DMARC"))} <= published
    spf = _by_check(status.report)["SPF 127.0.0.1"]
    assert spf.found == ["v=spf1 a:mta.estafeta.test ~all"] and spf.detail.startswith("pass (1 of 10")
    assert await core.verification.refusal("ok.verify.test") is None


async def test_unpublished_records_read_missing_with_the_record_to_publish(
    tmp_path: Path, dns_world: World
) -> None:
    core = _core(tmp_path, dns_world, domains={"dns_update": None})  # nothing is published for us
    try:
        await _add(core, "bare.verify.test")
        status = await core.verification.status("bare.verify.test")
        assert status.state == "pending" and not status.may_send
        assert status.report is not None
        checks = _by_check(status.report)
        row = await core.domains.lookup("bare.verify.test")
        assert checks["DKIM"].status == "missing" and checks["DKIM"].found == []
        assert checks["DKIM"].name == f"{row.keys[0].selector}._domainkey.bare.verify.test"
        assert checks["DKIM"].expected.startswith("v=DKIM1; k=ed25519; p=")
        assert checks["DMARC"].status == "missing"
        assert checks["DMARC"].expected == "v=DMARC1; p=none; rua=mailto:dmarc@bounces.estafeta.test"
        assert checks["SPF 127.0.0.1"].status == "missing"
        assert checks["SPF 127.0.0.1"].expected == "v=spf1 a:mta.estafeta.test ~all"
        assert checks["return path MX"].status == "ok"  # the platform's own, published by the world
        refusal = await core.verification.refusal("bare.verify.test")
        assert refusal is not None
        assert refusal.startswith("sending domain bare.verify.test is not verified yet: DKIM ")
        assert "(and 2 more)" in refusal and "`estafeta domains verify bare.verify.test`" in refusal
    finally:
        core.close()


async def test_a_different_dkim_key_reads_wrong_with_what_was_found(core: Core, dns_world: World) -> None:
    await _add(core, "stale.verify.test")
    row = await core.domains.lookup("stale.verify.test")
    name = f"{row.keys[0].selector}._domainkey.stale.verify.test"
    _put(dns_world, name, "TXT", "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    report = (await core.verification.verify("stale.verify.test", actor=SYSTEM)).report
    assert report is not None and not report.verified
    dkim = _by_check(report)["DKIM"]
    assert dkim.status == "wrong" and "another key" in dkim.detail
    assert dkim.found == ["v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="]
    assert _by_check(report)["alignment"].status == "wrong"
    _put(dns_world, name, "TXT", "v=DKIM1; k=ed25519; p=")
    report = (await core.verification.verify("stale.verify.test", actor=SYSTEM)).report
    assert report is not None and "revoked" in _by_check(report)["DKIM"].detail


async def test_missing_or_broken_dmarc_fails_verification(core: Core, dns_world: World) -> None:
    await _add(core, "nodmarc.verify.test")
    dns_world.zone.remove("_dmarc.nodmarc.verify.test", "TXT")
    report = (await core.verification.verify("nodmarc.verify.test", actor=SYSTEM)).report
    assert report is not None and not report.verified
    checks = _by_check(report)
    assert checks["DMARC"].status == "missing" and checks["DKIM"].status == "ok"
    assert checks["alignment"].status == "wrong" and "DMARC" in checks["alignment"].detail
    _put(dns_world, "_dmarc.nodmarc.verify.test", "TXT", "v=DMARC1; p=sometimes")
    checks = _by_check((await core.verification.verify("nodmarc.verify.test", actor=SYSTEM)).report)  # type: ignore[arg-type]
    assert checks["DMARC"].status == "wrong" and "none,quarantine,reject" in checks["DMARC"].detail
    _put(dns_world, "_dmarc.nodmarc.verify.test", "TXT", "v=DMARC1; p=none", "v=DMARC1; p=reject")
    checks = _by_check((await core.verification.verify("nodmarc.verify.test", actor=SYSTEM)).report)  # type: ignore[arg-type]
    assert checks["DMARC"].status == "wrong" and "several" in checks["DMARC"].detail


async def test_the_organizational_domains_dmarc_applies_to_a_subdomain(core: Core, dns_world: World) -> None:
    _put(dns_world, "_dmarc.orgpolicy.test", "TXT", "v=DMARC1; p=quarantine")
    await _add(core, "mail.orgpolicy.test")
    dns_world.zone.remove("_dmarc.mail.orgpolicy.test", "TXT")
    report = (await core.verification.verify("mail.orgpolicy.test", actor=SYSTEM)).report
    assert report is not None and report.verified
    dmarc = _by_check(report)["DMARC"]
    assert dmarc.name == "_dmarc.orgpolicy.test" and dmarc.detail.startswith("p=quarantine, rua=none")
    assert "the platform's reports need rua=mailto:dmarc@bounces.estafeta.test" in dmarc.detail


async def test_spf_over_ten_lookups_or_without_the_platform_reads_wrong(core: Core, dns_world: World) -> None:
    await _add(core, "heavy.verify.test")
    for i in range(11):
        _put(dns_world, f"l{i}.spf.verify.test", "TXT", "v=spf1 -all")
    includes = " ".join(f"include:l{i}.spf.verify.test" for i in range(11))
    _put(dns_world, "heavy.verify.test", "TXT", f"v=spf1 {includes} a:mta.estafeta.test ~all")
    report = (await core.verification.verify("heavy.verify.test", actor=SYSTEM)).report
    assert report is not None
    spf = _by_check(report)["SPF 127.0.0.1"]
    assert spf.status == "wrong" and spf.detail == "permerror: SPF Permanent Error: Too many DNS lookups"
    assert report.verified  # DMARC passes through DKIM: SPF is reported, not required
    _put(dns_world, "heavy.verify.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    spf = _by_check((await core.verification.verify("heavy.verify.test", actor=SYSTEM)).report)[
        "SPF 127.0.0.1"
    ]  # type: ignore[arg-type]
    assert spf.status == "wrong" and spf.detail == "fail: this address is not authorized"
    assert spf.expected == "v=spf1 ip4:192.0.2.1 a:mta.estafeta.test -all"  # the platform's term added


async def test_alignment_follows_aspf_and_the_return_path_domain(tmp_path: Path, dns_world: World) -> None:
    # The return path under the sender's own domain aligns SPF (relaxed); strict aspf does not.
    core = _core(tmp_path, dns_world, return_path_domain="bounces.aligned.verify.test")
    try:
        _put(dns_world, "bounces.aligned.verify.test", "MX", "10 mta.estafeta.test.")
        _put(dns_world, "bounces.aligned.verify.test", "TXT", "v=spf1 a:mta.estafeta.test -all")
        await _add(core, "aligned.verify.test")
        row = await core.domains.lookup("aligned.verify.test")
        dns_world.zone.remove(f"{row.keys[0].selector}._domainkey.aligned.verify.test", "TXT")
        report = (await core.verification.verify("aligned.verify.test", actor=SYSTEM)).report
        assert report is not None and not report.verified  # DKIM itself is required
        alignment = _by_check(report)["alignment"]
        assert alignment.status == "ok" and alignment.detail == "DMARC passes through SPF"
        rua = "mailto:dmarc@bounces.aligned.verify.test"
        _put(dns_world, "_dmarc.aligned.verify.test", "TXT", f"v=DMARC1; p=reject; aspf=s; rua={rua}")
        alignment = _by_check((await core.verification.verify("aligned.verify.test", actor=SYSTEM)).report)[
            "alignment"
        ]  # type: ignore[arg-type]
        assert alignment.status == "wrong"
        assert alignment.found[1] == "return path bounces.aligned.verify.test: not aligned (aspf=s), SPF pass"
    finally:
        core.close()


async def test_a_return_path_mx_elsewhere_reads_wrong(tmp_path: Path, dns_world: World) -> None:
    core = _core(tmp_path, dns_world, return_path_domain="elsewhere.verify.test")
    try:
        _put(dns_world, "elsewhere.verify.test", "MX", "10 mx.gmail.test.")
        await _add(core, "rp.verify.test")
        mx = _by_check((await core.verification.verify("rp.verify.test", actor=SYSTEM)).report)[
            "return path MX"
        ]  # type: ignore[arg-type]
        # the sandbox publishes the platform's MX next to the other one; a receiver may still pick either
        assert mx.status == "ok" and sorted(mx.found) == ["10 mta.estafeta.test.", "10 mx.gmail.test."]
        _put(dns_world, "elsewhere.verify.test", "MX", "10 mx.gmail.test.")
        mx = _by_check((await core.verification.verify("rp.verify.test", actor=SYSTEM)).report)[
            "return path MX"
        ]  # type: ignore[arg-type]
        assert mx.status == "wrong" and mx.found == ["10 mx.gmail.test."]
        assert mx.expected == "10 mta.estafeta.test."
    finally:
        core.close()


def _events(core: Core, kind: str) -> list[dict[str, Any]]:
    rows = core.db.call(lambda conn: conn.execute(select(Event).where(Event.type == kind)).all())
    return [row.data for row in rows]


async def test_a_domain_that_breaks_is_flagged_then_refused_only_after_the_grace_period(
    core: Core, dns_world: World
) -> None:
    clock = core.clock
    assert isinstance(clock, ManualClock)
    await _add(core, "breaks.verify.test")
    assert _events(core, "domain_verified") == []  # the first verification is the answer to `domains add`
    dns_world.zone.remove("_dmarc.breaks.verify.test", "TXT")
    clock.advance(3600)
    assert await core.verification.recheck() == 1  # due once an hour (domains.recheck_minutes)
    status = await core.verification.status("breaks.verify.test")
    assert status.state == "failing" and status.may_send
    assert status.sending_stops_at == status.failing_since + timedelta(hours=72)  # type: ignore[operator]
    (failing,) = _events(core, "domain_failing")
    assert failing["sending_stops_at"] == status.sending_stops_at.isoformat()  # type: ignore[union-attr]
    assert failing["problems"][0].startswith("DMARC: publish a DMARC policy")
    (review,) = await core.reputation.reviews()
    assert "sending domain breaks.verify.test fails verification" in review.reason
    assert await core.verification.refusal("breaks.verify.test") is None  # still sending
    assert await core.verification.recheck() == 0  # checked a moment ago
    clock.advance(71 * 3600)
    await core.verification.recheck()
    assert (await core.verification.status("breaks.verify.test")).state == "failing"
    clock.advance(3600)
    await core.verification.recheck()
    status = await core.verification.status("breaks.verify.test")
    assert status.state == "unverified" and not status.may_send
    refusal = await core.verification.refusal("breaks.verify.test")
    assert refusal is not None and refusal.startswith("sending domain breaks.verify.test failed verification")
    assert len(_events(core, "domain_unverified")) == 1 and len(_events(core, "domain_failing")) == 1
    dns_world.zone.add("_dmarc.breaks.verify.test", "TXT", "v=DMARC1; p=none")
    assert (await core.verification.verify("breaks.verify.test", actor=SYSTEM)).state == "verified"
    assert _events(core, "domain_verified") == [
        {"domain": "breaks.verify.test", "previous_state": "unverified", "problems": []}
    ]
    assert await core.verification.refusal("breaks.verify.test") is None


def _report(*statuses: str) -> DomainReport:
    checks = [RecordCheck(f"c{i}", "n", "TXT", s, "", [], "", True) for i, s in enumerate(statuses)]  # type: ignore[arg-type]
    return DomainReport("d.test", checks)


def test_a_check_that_only_failed_to_reach_dns_changes_no_state() -> None:
    from datetime import UTC, datetime

    from estafeta.store.domain_checks import CheckRow

    now = datetime(2026, 3, 1, tzinfo=UTC)
    verified = CheckRow(1, "verified", now, now, None, {})
    grace = timedelta(hours=1)
    assert next_state(verified, _report("ok", "unknown"), now, grace) == ("verified", None)
    assert next_state(verified, _report("missing", "unknown"), now, grace) == ("failing", now)
    assert next_state(None, _report("missing"), now, grace) == ("pending", None)
    failing = CheckRow(1, "failing", now, now, now, {})
    assert next_state(failing, _report("wrong"), now + grace, grace) == ("unverified", now)
    assert next_state(failing, _report("ok"), now + grace, grace) == ("verified", None)
