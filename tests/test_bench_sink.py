"""The benchmark sink: counts every message a client sends, however the bytes are split or pipelined, and
its DNS server sends the benchmark's recipient domains to it. `estafeta bench pipeline`, `bench smtp` and
`bench campaign` run here briefly, delivering to it (their figures are for `estafeta bench`, not tests)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import dns.asyncresolver
import psutil
import psycopg
from typer.testing import CliRunner

from estafeta.bench.resources import postgresql_server_pid, tree_cpu_seconds
from estafeta.bench.sink import SinkProcess, serve_sink
from estafeta.cli import app

PIPELINED = (
    b"EHLO client.test\r\n"
    b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@gmail.test>\r\nDATA\r\n"
    b"Subject: one\r\n\r\nbody with a line\r\n..stuffed dot\r\n.\r\n"
    b"MAIL FROM:<a@b.test>\r\nRCPT TO:<y@gmail.test>\r\nDATA\r\n"
    b".\r\n"  # an empty message: the terminator is the first line
    b"NOPE\r\nQUIT\r\n"
)


async def test_pipelined_commands_split_anywhere_are_answered_in_order() -> None:
    received = multiprocessing.get_context("spawn").Value("q", 0, lock=False)
    server = await serve_sink(received)
    port = server.sockets[0].getsockname()[1]
    try:
        for chunk_size in (1, 7, len(PIPELINED)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for start in range(0, len(PIPELINED), chunk_size):
                writer.write(PIPELINED[start : start + chunk_size])
                await writer.drain()
            replies = (await asyncio.wait_for(reader.read(), 10)).decode()
            writer.close()
            codes = [line[:3] for line in replies.split("\r\n") if line and line[3] == " "]
            expected = ["220", "250", "250", "250", "354", "250", "250", "250", "354", "250", "502"]
            assert codes == [*expected, "221"]
    finally:
        server.close()
    assert received.value == 6


async def test_the_sink_process_receives_the_mail_its_dns_sends_to_it() -> None:
    with SinkProcess(["gmail.test", "yahoo.test"]) as sink:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [sink.addresses.dns_address[0]]
        resolver.port = sink.addresses.dns_address[1]
        mx = (await resolver.resolve("yahoo.test", "MX"))[0]
        host = (await resolver.resolve(mx.exchange, "A"))[0]
        # The sink has no IPv6 address; that answer may be cached as a real zone's is.
        no_aaaa = await resolver.resolve(mx.exchange, "AAAA", raise_on_no_answer=False)
        assert no_aaaa.rrset is None and no_aaaa.response.authority[0][0].minimum == 300
        async with aiosmtplib.SMTP(hostname=host.address, port=sink.addresses.smtp_port) as client:
            for n in range(3):
                await client.sendmail("a@b.test", [f"u{n}@yahoo.test"], b"Subject: hi\r\n\r\nhello\r\n")
        await sink.wait_for(3, timeout=30)
        assert sink.received == 3


def test_the_pipeline_and_relay_benches_deliver_to_the_sink(tmp_path: Path) -> None:
    for bench in ("pipeline", "smtp"):
        output = tmp_path / f"{bench}.json"
        result = CliRunner().invoke(
            app, ["bench", bench, "-n", "100", "--backend", "sqlite", "--output", str(output)]
        )
        assert result.exit_code == 0, result.output
        run = json.loads(output.read_text())["result"]["sqlite"]
        assert run["received_by_sink"] == run["delivered"] == 100
        assert run["cpu_ms_per_msg"] > 0
        assert "database_cpu_ms_per_msg" not in run  # SQLite's work is the platform's own
    bad = CliRunner().invoke(app, ["bench", "pipeline", "--backend", "oracle"])
    assert bad.exit_code != 0 and "unknown backend oracle" in bad.output


def test_the_campaign_bench_queues_and_delivers_a_list_to_the_sink(tmp_path: Path) -> None:
    output = tmp_path / "campaign.json"
    result = CliRunner().invoke(
        app, ["bench", "campaign", "-n", "150", "--backend", "postgresql", "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    run = json.loads(output.read_text())["result"]["postgresql"]
    assert run["imported"] == run["queued"] == run["rendered"] == run["delivered"] == 150
    assert run["database_cpu_ms_per_delivered_msg"] > 0  # the PostgreSQL server runs on this machine
    assert run["rss_mb_at_150_queued"] > 0


_HOLD_A_SINK = """
import time
from estafeta.bench.sink import SinkProcess
with SinkProcess(["gmail.test"]) as sink:
    print(sink.pid, flush=True)
    time.sleep(600)
"""


def test_a_benchmark_killed_with_sigkill_leaves_no_sink_behind() -> None:
    benchmark = subprocess.Popen([sys.executable, "-c", _HOLD_A_SINK], stdout=subprocess.PIPE, text=True)
    assert benchmark.stdout is not None
    sink = psutil.Process(int(benchmark.stdout.readline()))
    benchmark.kill()
    benchmark.wait()
    try:
        sink.wait(timeout=30)
    except psutil.TimeoutExpired:
        sink.kill()
        raise AssertionError("the sink outlived the benchmark that started it") from None


def test_the_postgresql_servers_processes_are_found_when_it_runs_here(pg_server: str) -> None:
    main = postgresql_server_pid(pg_server)
    assert main is not None
    with psycopg.connect(pg_server) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        assert backend[0] in {child.pid for child in psutil.Process(main).children()}
    assert tree_cpu_seconds([main]) > 0
