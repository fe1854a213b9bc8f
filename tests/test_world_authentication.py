"""dmarc.test: two independent DKIM verifiers (dkimpy, Debian's Mail::DKIM), pyspf and DMARC `p=reject`."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import aiosmtplib
import pytest

from estafeta.dkim import DkimKey, DkimSigner, generate_key
from estafeta.world import World

DMARC_MX = "127.0.0.45"


@pytest.fixture(scope="module")
def keys() -> tuple[DkimKey, DkimKey]:
    return (
        generate_key("acme.test", selector="r1"),
        generate_key("acme.test", algorithm="ed25519-sha256", selector="e1"),
    )


def message(sender: str, subject: str = "Hello") -> bytes:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = "ann@dmarc.test"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@acme.test>"
    msg.set_content("A line of text.\n")
    return msg.as_bytes()


async def send(world: World, mail_from: str, data: bytes) -> None:
    await aiosmtplib.send(
        data,
        sender=mail_from,
        recipients=["ann@dmarc.test"],
        hostname=DMARC_MX,
        port=world.smtp_port,
        local_hostname="mta.estafeta.test",
        start_tls=False,
    )


def publish(world: World, *keys: DkimKey, policy: str = "reject", spf: str = "v=spf1 -all") -> None:
    for key in keys:
        world.zone.add(key.record_name, "TXT", key.record_value)
    world.zone.add("_dmarc.acme.test", "TXT", f"v=DMARC1; p={policy}")
    world.zone.add("acme.test", "TXT", spf)


async def test_dual_signatures_pass_both_verifiers(world: World, keys: tuple[DkimKey, DkimKey]) -> None:
    rsa_key, ed_key = keys
    publish(world, rsa_key, ed_key)
    data = DkimSigner(ed_key).sign(DkimSigner(rsa_key).sign(message("News <news@acme.test>")))
    await send(world, "bounces@bounces.estafeta.test", data)

    [received] = world.received("dmarc.test")
    verdict = received.authentication
    assert verdict is not None
    assert (verdict.dkim, verdict.dmarc, verdict.policy) == ("pass", "pass", "reject")
    dkimpy = {(s.selector, s.algorithm): s.result for s in verdict.verdicts("dkimpy")}
    assert dkimpy == {("r1", "rsa-sha256"): "pass", ("e1", "ed25519-sha256"): "pass"}
    # Debian 12's Mail::DKIM verifies RSA and does not know Ed25519 (RFC 8463) yet.
    mail_dkim = {(s.selector, s.algorithm): (s.result, s.detail) for s in verdict.verdicts("mail-dkim")}
    assert mail_dkim[("r1", "rsa-sha256")] == ("pass", "pass")
    assert mail_dkim[("e1", "ed25519-sha256")][0] == "invalid"
    assert "unsupported algorithm" in mail_dkim[("e1", "ed25519-sha256")][1]
    stats = world.stats()["dmarc.test"]
    assert (stats.accepted, stats.dkim_pass, stats.dmarc_pass) == (1, 1, 1)
    assert (stats.mail_dkim_pass, stats.mail_dkim_fail, stats.mail_dkim_unsupported) == (1, 0, 1)


async def test_both_verifiers_see_a_tampered_body(world: World, keys: tuple[DkimKey, DkimKey]) -> None:
    rsa_key, _ = keys
    publish(world, rsa_key, policy="none")
    data = DkimSigner(rsa_key).sign(message("news@acme.test")).replace(b"A line of", b"One line of")
    await send(world, "bounces@bounces.estafeta.test", data)

    [received] = world.received("dmarc.test")
    verdict = received.authentication
    assert verdict is not None
    assert [s.result for s in verdict.verdicts("dkimpy")] == ["fail"]
    [second] = verdict.verdicts("mail-dkim")
    assert (second.result, second.detail) == ("fail", "fail (body has been altered)")
    assert (verdict.dmarc, verdict.policy) == ("fail", "none")  # p=none: failing, yet delivered
    assert world.stats()["dmarc.test"].mail_dkim_fail == 1


async def test_p_reject_refuses_mail_aligned_neither_by_dkim_nor_by_spf(
    world: World, keys: tuple[DkimKey, DkimKey]
) -> None:
    rsa_key, _ = keys
    other = DkimKey("other.test", rsa_key.selector, rsa_key.algorithm, rsa_key.private_key)
    publish(world, other)
    unaligned = DkimSigner(other).sign(message("news@acme.test", "Unaligned"))
    for data in (unaligned, message("news@acme.test", "Unsigned")):
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(world, "bounces@bounces.estafeta.test", data)
        assert refused.value.code == 550
        assert refused.value.message.startswith(
            "5.7.1 Unauthenticated mail from acme.test is refused by its DMARC policy (p=reject)"
        )
    assert world.received("dmarc.test") == []
    stats = world.stats()["dmarc.test"]
    assert (stats.rejected_5xx, stats.dmarc_fail, stats.mail_dkim_pass) == (2, 2, 1)  # d=other.test passes


async def test_aligned_spf_alone_satisfies_dmarc(world: World) -> None:
    publish(world, spf="v=spf1 ip4:127.0.0.1 -all")
    await send(world, "news@acme.test", message("news@acme.test"))  # from 127.0.0.1, unsigned

    [received] = world.received("dmarc.test")
    verdict = received.authentication
    assert verdict is not None
    assert (verdict.dkim, verdict.spf, verdict.dmarc) == ("none", "pass", "pass")
    assert world.stats()["dmarc.test"].spf_pass == 1


async def test_spf_fails_for_an_address_the_record_does_not_name(world: World) -> None:
    publish(world, spf="v=spf1 ip4:127.0.0.99 -all")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(world, "news@acme.test", message("news@acme.test"))
    assert "SPF fail" in refused.value.message
    assert world.stats()["dmarc.test"].spf_fail == 1
