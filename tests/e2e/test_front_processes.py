"""`front.processes`: the API and the relay in several processes, on SQLite and on PostgreSQL; connections
land on all of them (relay sessions evenly, however few), every message is committed before its answer,
/metrics counts what every process accepted whichever process answers it, and they stop together."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from pathlib import Path

import aiosmtplib
import httpx
import psutil
import pytest

from estafeta.audit import SYSTEM
from estafeta.bench.sink import SinkProcess
from estafeta.platform import Platform
from estafeta.sandbox import sandbox_settings
from estafeta.smtp.credentials import NewSmtpCredential
from estafeta.store import queue as queue_store
from estafeta.supervisor import Child
from estafeta.tls import write_self_signed

HOST = "127.0.0.1"
SESSIONS = 16


def _established(pid: int, port: int) -> int:
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_api_and_relay_are_served_by_every_front_process(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    database = (
        f"sqlite:///{tmp_path / 'front.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    )
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(cert, key, [HOST])
    sink = SinkProcess(["gmail.test"])  # its DNS server takes the sending domain's records
    addresses = sink.start()
    settings = sandbox_settings(
        database,
        addresses.dns_address,
        addresses.smtp_port,
        api={"host": HOST, "port": 0},
        front={"processes": 2},
        smtp={
            "host": HOST,
            "starttls_port": 0,
            "implicit_tls_port": 0,
            "tls_cert": cert,
            "tls_key": key,
            "max_connections_per_ip": SESSIONS,
        },
        warmup={"tiers": []},
    )
    platform = Platform(settings)
    core = platform.core
    account = await core.accounts.create("acme", actor=SYSTEM)
    await core.domains.add(account.id, "acme.test", "ed25519-sha256", actor=SYSTEM)
    credential = await core.smtp_credentials.create(account.id, actor=SYSTEM)
    token = (await core.api_keys.create(account.id, "tests", actor=SYSTEM)).token
    await platform.start(api=True, delivery=False, smtp=True, services=True)
    assert platform.smtp_ports is not None and platform.api_port is not None
    (child,) = platform.supervisor.children("front")
    pid = child.process.pid
    assert pid is not None
    ours = psutil.Process().pid
    port = platform.smtp_ports.starttls
    tls = ssl.create_default_context(cafile=str(cert))
    relays = [aiosmtplib.SMTP(hostname=HOST, port=port, tls_context=tls, timeout=60) for _ in range(SESSIONS)]
    apis = [
        httpx.AsyncClient(base_url=platform.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        for _ in range(SESSIONS)
    ]
    try:
        for relay in relays:
            await relay.connect()
            await relay.login(credential.username, credential.password)
        for api in apis:  # each client keeps its connection open
            assert (await api.get("/v1/account/reputation")).status_code == 200
        # Both processes hold sessions and API connections (16 all on one: a 1 in 32,768 chance each).
        for listening in (port, platform.api_port):
            assert _established(pid, listening) > 0 and _established(ours, listening) > 0

        async def relay_one(n: int, relay: aiosmtplib.SMTP) -> None:
            raw = f"From: Acme <hello@acme.test>\r\nTo: r{n}@gmail.test\r\nSubject: n{n}\r\n\r\nHi.\r\n"
            await relay.sendmail("hello@acme.test", [f"r{n}@gmail.test"], raw.encode())
            await relay.quit()

        async def post_one(n: int, api: httpx.AsyncClient) -> None:
            message = {
                "from": "hello@acme.test",
                "to": [f"a{n}@gmail.test"],
                "subject": f"n{n}",
                "text": "hi",
            }
            response = await api.post("/v1/messages", json={"messages": [message]})
            assert response.status_code == 202, response.text

        await asyncio.gather(
            *(relay_one(n, relay) for n, relay in enumerate(relays)),
            *(post_one(n, api) for n, api in enumerate(apis)),
        )
        counts = await core.db.run(queue_store.state_counts)
        assert counts == {"queued": 2 * SESSIONS}  # every answer came after its commit, whichever process

        def accepted(exposition: str) -> float:
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in exposition.splitlines()
                if line.startswith("estafeta_accepted_messages_total{")
            )

        # /metrics answers for the whole node whichever process takes the connection (the child's counts
        # reach the serve process within a report interval).
        deadline = time.monotonic() + 10
        while True:
            answers = [accepted((await api.get("/metrics")).text) for api in apis]
            if answers == [2 * SESSIONS] * SESSIONS:
                break
            assert time.monotonic() < deadline, answers
            await asyncio.sleep(0.2)
    finally:
        for api in apis:
            await api.aclose()
        await platform.stop(grace=2)
        sink.stop()
    assert not child.process.is_alive()


def _serving_pid(relay: aiosmtplib.SMTP, port: int, pids: list[int]) -> int:
    """The process holding the server side of a client's connection to `port`."""
    assert relay.transport is not None
    client_port = relay.transport.get_extra_info("sockname")[1]
    (pid,) = (
        pid
        for pid in pids
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.raddr and c.raddr.port == client_port
    )
    return pid


async def _two_front_processes(
    tmp_path: Path, sink: SinkProcess
) -> tuple[Platform, NewSmtpCredential, ssl.SSLContext]:
    """A platform (not started) with 2 front processes, relaying to `sink`, whose sender acme.test has relay
    credentials; and a TLS context trusting its relay's certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(cert, key, [HOST])
    addresses = sink.start()
    settings = sandbox_settings(
        f"sqlite:///{tmp_path / 'front.db'}",
        addresses.dns_address,
        addresses.smtp_port,
        api={"host": HOST, "port": 0},
        front={"processes": 2},
        smtp={"host": HOST, "starttls_port": 0, "implicit_tls_port": 0, "tls_cert": cert, "tls_key": key},
        warmup={"tiers": []},
    )
    platform = Platform(settings)
    account = await platform.core.accounts.create("acme", actor=SYSTEM)
    await platform.core.domains.add(account.id, "acme.test", "ed25519-sha256", actor=SYSTEM)
    credential = await platform.core.smtp_credentials.create(account.id, actor=SYSTEM)
    return platform, credential, ssl.create_default_context(cafile=str(cert))


async def _until_settled(platform: Platform, child: Child) -> None:
    """Until neither process counts a relay connection."""
    deadline = time.monotonic() + 10
    while child.handed or platform.smtp.serving:
        assert time.monotonic() < deadline, (child.handed, platform.smtp.serving)
        await asyncio.sleep(0.05)


async def test_relay_sessions_are_spread_evenly_over_the_front_processes(tmp_path: Path) -> None:
    """The serve process accepts every relay connection and hands it to the process serving the fewest:
    8 sessions split 4/4 and 3 split 2/1, on the STARTTLS port and the implicit-TLS port alike, and mail
    sent through each process is accepted and delivered."""
    sink = SinkProcess(["gmail.test"])
    platform, credential, tls = await _two_front_processes(tmp_path, sink)
    core = platform.core
    await platform.start(api=True, delivery=True, smtp=True, services=False)
    assert platform.smtp_ports is not None
    (child,) = platform.supervisor.children("front")
    assert child.process.pid is not None
    pids = [os.getpid(), child.process.pid]
    sent = 0
    try:
        # Connections that end in a failed TLS handshake end in either process's count too.
        for _ in range(4):
            reader, writer = await asyncio.open_connection(HOST, platform.smtp_ports.implicit_tls)
            writer.write(b"EHLO not-tls\r\n")
            await reader.read()
            writer.close()
        await _until_settled(platform, child)
        rounds = [(platform.smtp_ports.starttls, False, 8), (platform.smtp_ports.implicit_tls, True, 3)]
        for port, implicit_tls, count in rounds:
            relays = [
                aiosmtplib.SMTP(hostname=HOST, port=port, tls_context=tls, use_tls=implicit_tls, timeout=60)
                for _ in range(count)
            ]
            await asyncio.gather(*(relay.connect() for relay in relays))
            for relay in relays:
                await relay.login(credential.username, credential.password)
            serving = [_serving_pid(relay, port, pids) for relay in relays]
            assert sorted(serving.count(pid) for pid in pids) == [count // 2, count - count // 2], serving
            for n, relay in enumerate(relays, start=sent):
                raw = f"From: Acme <hello@acme.test>\r\nTo: r{n}@gmail.test\r\nSubject: n{n}\r\n\r\nHi.\r\n"
                await relay.sendmail("hello@acme.test", [f"r{n}@gmail.test"], raw.encode())
                await relay.quit()
            sent += count
            await _until_settled(platform, child)  # the next round is spread from zero
        await sink.wait_for(sent, timeout=30)
        assert sink.received == sent
        assert await core.db.run(queue_store.state_counts) == {"delivered": sent}
    finally:
        await platform.stop(grace=2)
        sink.stop()


async def test_relay_sessions_go_to_the_processes_alive(tmp_path: Path) -> None:
    """While a front child is dead, the serve process takes every new session; its replacement, which
    holds none, takes the next ones."""
    sink = SinkProcess(["gmail.test"])
    platform, credential, tls = await _two_front_processes(tmp_path, sink)
    core = platform.core
    await platform.start(api=False, delivery=False, smtp=True, services=False)
    assert platform.smtp_ports is not None
    port = platform.smtp_ports.starttls
    relays: list[aiosmtplib.SMTP] = []

    async def open_sessions(count: int, pids: list[int]) -> list[int]:
        """Open `count` sessions, send a message over each; the processes serving them."""
        opened = [
            aiosmtplib.SMTP(hostname=HOST, port=port, tls_context=tls, timeout=60) for _ in range(count)
        ]
        relays.extend(opened)
        for relay in opened:
            await relay.connect()
            await relay.login(credential.username, credential.password)
            raw = b"From: <hello@acme.test>\r\nTo: <r@gmail.test>\r\nSubject: hi\r\n\r\nHi.\r\n"
            await relay.sendmail("hello@acme.test", ["r@gmail.test"], raw)
        return [_serving_pid(relay, port, pids) for relay in opened]

    try:
        (child,) = platform.supervisor.children("front")
        assert child.process.pid is not None
        child.process.kill()
        await asyncio.to_thread(child.process.join, 10)
        assert await open_sessions(2, [os.getpid()]) == [os.getpid()] * 2
        deadline = time.monotonic() + 60
        while not any(c.ready.done() for c in platform.supervisor.children("front")):
            assert time.monotonic() < deadline, "no front process replaced the dead one"
            await asyncio.sleep(0.1)
        (replacement,) = platform.supervisor.children("front")
        assert replacement.process.pid is not None and replacement is not child
        pids = [os.getpid(), replacement.process.pid]
        assert await open_sessions(2, pids) == [replacement.process.pid] * 2
        assert await core.db.run(queue_store.state_counts) == {"queued": 4}
    finally:
        for relay in relays:
            await relay.quit()
        await platform.stop(grace=2)
        sink.stop()
