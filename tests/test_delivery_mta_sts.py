"""MTA-STS policy discovery and its cache, against the world's DNS and its policy hosts over real HTTPS."""

from __future__ import annotations

from datetime import timedelta

from estafeta.clock import ManualClock
from estafeta.config import MtaStsSettings
from estafeta.delivery.mta_sts import MtaSts
from estafeta.delivery.mx import MxResolver, make_resolver
from estafeta.store.db import Database
from estafeta.world import World
from estafeta.world.mta_sts import policy_text

DAY = 86400


def discovery(world: World, db: Database, clock: ManualClock, **settings: object) -> MtaSts:
    values = {
        "ca_file": world.ca_file,
        "policy_port": world.https_port,
        "allow_private_addresses": True,
        **settings,
    }
    resolver = make_resolver([f"{world.dns_address[0]}:{world.dns_address[1]}"])
    return MtaSts(db, MtaStsSettings(**values), clock, resolver, MxResolver(resolver).addresses)  # type: ignore[arg-type]


def provider(world: World, domain: str):  # type: ignore[no-untyped-def]
    return next(p for p in world.providers if p.domain == domain)


async def test_a_policy_is_fetched_once_then_refetched_only_when_its_id_changes(
    world: World, db: Database
) -> None:
    clock = ManualClock()
    sts = discovery(world, db, clock)
    first = await sts.lookup("secure.test")
    assert first.failure is None and first.policy is not None
    assert (first.policy.id, first.policy.mode, first.policy.mx) == ("1", "enforce", ("mx.secure.test",))
    assert first.policy.allows("mx.secure.test") and not first.policy.allows("mx.elsewhere.test")
    assert first.policy.expires_at == clock.now() + timedelta(seconds=DAY)  # the policy's max_age
    assert (await sts.lookup("secure.test")).policy == first.policy
    assert world.policies.fetches() == ["mta-sts.secure.test"]

    world.policies.publish("secure.test", policy_text(provider(world, "secure.test"), mode="testing"), "2")
    second = await sts.lookup("secure.test")
    assert second.policy is not None and (second.policy.id, second.policy.mode) == ("2", "testing")
    assert len(world.policies.fetches()) == 2
    await sts.close()


async def test_a_cached_policy_outlives_its_record_and_a_restart_until_max_age(
    world: World, db: Database
) -> None:
    clock = ManualClock()
    first = discovery(world, db, clock)
    assert (await first.lookup("secure.test")).policy is not None
    await first.close()
    world.policies.withdraw("secure.test")  # an attacker strips the record and blocks the policy host

    restarted = discovery(world, db, clock)  # a new process: the cache is in the database
    kept = await restarted.lookup("secure.test")
    assert kept.policy is not None and kept.policy.mode == "enforce" and kept.failure is None
    clock.advance(DAY + 1)  # max_age is a day: then the policy no longer applies
    assert (await restarted.lookup("secure.test")).policy is None
    assert world.policies.fetches() == ["mta-sts.secure.test"]
    await restarted.close()


async def test_without_a_record_there_is_no_policy_and_nothing_is_fetched(world: World, db: Database) -> None:
    sts = discovery(world, db, ManualClock())
    found = await sts.lookup("gmail.test")
    assert found.policy is None and found.failure is None
    assert world.policies.fetches() == []


async def test_an_invalid_policy_is_reported_and_not_applied(world: World, db: Database) -> None:
    world.policies.publish("secure.test", "version: STSv1\r\nmode: enforce\r\n", "3")
    found = await discovery(world, db, ManualClock()).lookup("secure.test")
    assert found.policy is None and found.failure == "sts-policy-invalid"
    assert "max_age" in found.detail


async def test_a_policy_host_with_an_untrusted_certificate_gives_no_policy(
    world: World, db: Database
) -> None:
    found = await discovery(world, db, ManualClock(), ca_file=None).lookup("secure.test")
    assert found.policy is None and found.failure == "sts-webpki-invalid"
    assert "certificate" in found.detail


async def test_policy_hosts_on_private_addresses_are_refused_outside_a_sandbox(
    world: World, db: Database
) -> None:
    found = await discovery(world, db, ManualClock(), allow_private_addresses=False).lookup("secure.test")
    assert found.policy is None and found.failure == "sts-policy-fetch-error"
    assert "not a public address" in found.detail
    assert world.policies.fetches() == []
