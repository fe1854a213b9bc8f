"""A sending domain's DNS status against the simulated internet's real DNS server: what is published,
missing, or published with another value."""

from __future__ import annotations

from pathlib import Path

from estafeta.core import Core
from estafeta.sandbox import sandbox_settings
from estafeta.world import World


async def test_each_record_reads_published_missing_or_different(fresh_world: World, tmp_path: Path) -> None:
    settings = sandbox_settings(tmp_path / "dns.db", fresh_world.dns_address, fresh_world.smtp_port)
    core = Core(settings)
    try:
        account = await core.accounts.create("shop")
        domain, key = await core.domains.add(account.id, "shop-status.test")
        before = {r.record.purpose.split(":")[0]: r.status for r in await core.dns_status(domain)}
        assert before == {"DKIM public key": "missing", "SPF": "missing", "DMARC policy": "missing"}
        fresh_world.zone.add(key.record_name, "TXT", key.record_value)
        fresh_world.zone.add("shop-status.test", "TXT", "v=spf1 ip4:127.0.0.0/8 ~all")
        fresh_world.zone.add("_dmarc.shop-status.test", "TXT", "v=DMARC1; p=none")
        after = {r.record.purpose.split(":")[0]: r.status for r in await core.dns_status(domain)}
        assert after == {"DKIM public key": "published", "SPF": "published", "DMARC policy": "published"}
        fresh_world.zone.remove(key.record_name, "TXT")
        fresh_world.zone.add(key.record_name, "TXT", "v=DKIM1; k=rsa; p=AAAAold")  # a stale key
        stale = {r.record.purpose.split(":")[0]: r for r in await core.dns_status(domain)}
        assert stale["DKIM public key"].status == "different"
        assert stale["DKIM public key"].found == ["v=DKIM1; k=rsa; p=AAAAold"]
    finally:
        fresh_world.zone.remove(key.record_name, "TXT")
        fresh_world.zone.remove("shop-status.test", "TXT")
        fresh_world.zone.remove("_dmarc.shop-status.test", "TXT")
        core.close()
