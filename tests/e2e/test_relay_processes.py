"""`smtp.processes`: several processes accept on the relay's ports (SO_REUSEPORT) against one PostgreSQL;
connections land on all of them, every message is committed before its 250, and they stop together."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiosmtplib
import psutil
import pytest
from pydantic import ValidationError

from estafeta.audit import SYSTEM
from estafeta.bench.sink import SinkProcess
from estafeta.config import Settings
from estafeta.platform import Platform
from estafeta.sandbox import sandbox_settings
from estafeta.store import queue as queue_store
from estafeta.tls import write_self_signed

HOST = "127.0.0.1"
SESSIONS = 16


def _established(pid: int, port: int) -> int:
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


async def test_connections_are_spread_over_the_accepting_processes(pg_url: str, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(cert, key, [HOST])
    sink = SinkProcess(["gmail.test"])  # its DNS server takes the sending domain's records
    addresses = sink.start()
    settings = sandbox_settings(
        pg_url,
        addresses.dns_address,
        addresses.smtp_port,
        smtp={
            "host": HOST,
            "starttls_port": 0,
            "implicit_tls_port": 0,
            "tls_cert": cert,
            "tls_key": key,
            "processes": 2,
            "max_connections_per_ip": SESSIONS,
        },
        warmup={"tiers": []},
    )
    platform = Platform(settings)
    core = platform.core
    account = await core.accounts.create("acme", actor=SYSTEM)
    await core.domains.add(account.id, "acme.test", "ed25519-sha256", actor=SYSTEM)
    credential = await core.smtp_credentials.create(account.id, actor=SYSTEM)
    await platform.start(api=False, delivery=False, smtp=True, services=False)
    assert platform.smtp_ports is not None and platform.relay_processes is not None
    port = platform.smtp_ports.starttls
    (child,) = platform.relay_processes.pids
    tls = ssl.create_default_context(cafile=str(cert))
    clients = [
        aiosmtplib.SMTP(hostname=HOST, port=port, tls_context=tls, timeout=60) for _ in range(SESSIONS)
    ]
    try:
        for client in clients:
            await client.connect()
            await client.login(credential.username, credential.password)
        # Both processes hold sessions (16 connections all on one: a 1 in 32,768 chance).
        assert _established(child, port) > 0 and _established(psutil.Process().pid, port) > 0

        async def send(n: int, client: aiosmtplib.SMTP) -> None:
            raw = f"From: Acme <hello@acme.test>\r\nTo: u{n}@gmail.test\r\nSubject: n{n}\r\n\r\nHi.\r\n"
            await client.sendmail("hello@acme.test", [f"u{n}@gmail.test"], raw.encode())
            await client.quit()

        await asyncio.gather(*(send(n, client) for n, client in enumerate(clients)))
        counts = await core.db.run(queue_store.state_counts)
        assert counts == {"queued": SESSIONS}  # every 250 came after its commit, whichever process
    finally:
        await platform.stop(grace=2)
        sink.stop()
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_sqlite_keeps_one_accepting_process(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs PostgreSQL"):
        Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", smtp={"processes": 2})
