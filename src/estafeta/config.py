"""Settings: `ESTAFETA_*` environment variables, an optional TOML file, and defaults.

Nested groups use a double underscore in the environment, e.g. `ESTAFETA_DELIVERY__SMTP_PORT=2525`.
The TOML file is named by `ESTAFETA_CONFIG` or `--config`; environment variables win over it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
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
    workers: int = Field(1, ge=1, description="delivery engines in this process")
    batch_size: int = Field(200, ge=1, description="queue entries claimed at once")
    max_in_flight: int = Field(2000, ge=1, description="claimed entries held in memory at most")
    lease_seconds: float = Field(
        300.0, gt=0, description="how long a claim is held before others may retry it"
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

    def limits_for(self, domain: str) -> DestinationLimits:
        return self.domain_limits.get(domain, self.default_limits)


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8025
    max_batch: int = Field(500, ge=1, description="messages per POST /v1/messages at most")
    max_message_bytes: int = Field(25 * 1024 * 1024, description="largest composed message accepted")


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
    max_recipients: int = Field(100, ge=1, description="recipients per message at most")
    rate_per_second: float = Field(50.0, ge=0, description="messages per second per account; 0 = unlimited")
    rate_burst: int = Field(200, ge=1, description="messages an account may send at once, then the rate")
    max_connections_per_ip: int = Field(20, ge=1, description="connections open at once from one client IP")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> SmtpSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("smtp.tls_cert and smtp.tls_key must be set together")
        return self


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
    api: ApiSettings = Field(default_factory=ApiSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)

    @field_validator("database_url")
    @classmethod
    def _driver(cls, url: str) -> str:
        if url.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

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
