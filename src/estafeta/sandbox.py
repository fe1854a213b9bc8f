"""Pointing a platform at the simulated internet: settings, and DNS records for its sending domains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from estafeta.config import Settings
from estafeta.dkim import DkimKey
from estafeta.world.providers import RETURN_PATH_DOMAIN
from estafeta.world.zone import zone_line


def zone_lines(keys: list[DkimKey]) -> str:
    """Zone-file lines publishing DKIM, SPF and DMARC for the sending domains under `.test`."""
    lines = []
    for key in keys:
        if key.domain.endswith(".test"):
            lines.append(zone_line(key.record_name, "TXT", key.record_value))
            lines.append(zone_line(key.domain, "TXT", "v=spf1 ip4:127.0.0.0/8 ~all"))
            rua = f"dmarc@{RETURN_PATH_DOMAIN}"  # the platform's inbound listener keeps the reports
            lines.append(zone_line(f"_dmarc.{key.domain}", "TXT", f"v=DMARC1; p=none; rua=mailto:{rua}"))
            # RFC 7489 §7.1: the report domain agrees to receive reports about this domain
            lines.append(zone_line(f"{key.domain}._report._dmarc.{RETURN_PATH_DOMAIN}", "TXT", "v=DMARC1"))
    return "\n".join(lines) + "\n"


def sandbox_settings(
    database: Path | str, dns_address: tuple[str, int], smtp_port: int, **overrides: Any
) -> Settings:
    """Settings for a platform that delivers into the simulated world."""
    url = database if isinstance(database, str) and "://" in database else f"sqlite:///{database}"
    values: dict[str, Any] = {
        "database_url": url,
        "hostname": "mta.estafeta.test",
        "return_path_domain": "bounces.estafeta.test",
        "dns_servers": [f"{dns_address[0]}:{dns_address[1]}"],
    }
    delivery = {"smtp_port": smtp_port, **overrides.pop("delivery", {})}
    values["delivery"] = delivery
    values["api"] = {"host": "127.0.0.1", "port": 0, **overrides.pop("api", {})}
    # Webhook receivers in the sandbox listen on loopback.
    values["webhooks"] = {"allow_private_addresses": True, **overrides.pop("webhooks", {})}
    # So do MTA-STS policy hosts and TLS-RPT endpoints (pass the world's ca_file and https_port too).
    values["mta_sts"] = {"allow_private_addresses": True, **overrides.pop("mta_sts", {})}
    # Recipients here are on this machine, so tracking links may point at the API itself.
    values["tracking"] = {"use_api_url": True, **overrides.pop("tracking", {})}
    # Links are only followed through the world's web proxy: nothing leaves the machine.
    links = overrides.pop("links", {})
    values["links"] = {"follow_redirects": bool(links.get("http_proxy")), **links}
    values.update(overrides)
    return Settings(**values)
