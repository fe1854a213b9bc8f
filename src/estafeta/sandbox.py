"""Pointing a platform at the simulated internet: its DNS (where domains publish), MX servers and web."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from estafeta.config import Settings
from estafeta.world.providers import PLATFORM_HOST, RETURN_PATH_DOMAIN


def dns_settings(dns_address: tuple[str, int]) -> dict[str, Any]:
    """Settings for a platform that resolves through the world's DNS server and publishes its sending
    domains' records there (RFC 2136), so that `domains add` leaves them verified."""
    server = f"{dns_address[0]}:{dns_address[1]}"
    return {
        "hostname": PLATFORM_HOST,
        "return_path_domain": RETURN_PATH_DOMAIN,
        "dns_servers": [server],
        "domains": {"dns_update": server},
    }


def sandbox_settings(
    database: Path | str, dns_address: tuple[str, int], smtp_port: int, **overrides: Any
) -> Settings:
    """Settings for a platform that delivers into the simulated world."""
    url = database if isinstance(database, str) and "://" in database else f"sqlite:///{database}"
    values: dict[str, Any] = {"database_url": url, **dns_settings(dns_address)}
    values["domains"] = {**values["domains"], **overrides.pop("domains", {})}
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
