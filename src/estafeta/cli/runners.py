"""`serve`, `world` and `demo`: the commands that run the platform or the simulated internet."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from estafeta import loop as event_loop
from estafeta.cli.common import ConfigOption, console, load


class _JsonLogs(logging.Formatter):
    """One JSON object a line; the time in RFC 3339 UTC (`2026-12-01T05:00:00.123Z`), as the API writes it."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry = {
            "time": moment.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


async def until_signal() -> None:
    """Wait for Ctrl-C or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


class Role(StrEnum):
    all = "all"
    front = "front"
    delivery = "delivery"


def serve(
    config: ConfigOption = None,
    role: Annotated[
        Role,
        typer.Option(
            help="all: everything in this process (and its delivery.processes children); front: API, SMTP "
            "relay, inbound listener, dashboard, webhooks, campaigns and scheduler, without delivery; "
            "delivery: delivery (this process or its delivery.processes children) and scheduler. Nodes of "
            "any role share one PostgreSQL (and Redis for limits): docs/scaling.md."
        ),
    ] = Role.all,
    front_processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="processes serving the API and the SMTP relay (front.processes); one per "
            "core lets accepting use every core",
        ),
    ] = None,
) -> None:
    """Run the platform: HTTP API, SMTP relay and delivery, until Ctrl-C or SIGTERM."""
    from estafeta.platform import Platform

    settings = load(config)
    if front_processes is not None:
        settings = settings.model_copy(
            update={"front": settings.front.model_copy(update={"processes": front_processes})}
        )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLogs())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    log = logging.getLogger("estafeta")

    async def run() -> None:
        platform = Platform(settings)
        front = role != Role.delivery
        await platform.start(
            api=front,
            delivery=role != Role.front,
            smtp=front and settings.smtp.enabled,
            services=front,
        )
        if front:
            log.info("serving API on %s", platform.api_url)
            if settings.front.processes > 1:
                log.info("serving the front from %d processes", settings.front.processes)
        if platform.smtp_ports is not None:
            log.info(
                "SMTP relay on %s ports %d (STARTTLS) and %d (TLS)",
                settings.smtp.host,
                platform.smtp_ports.starttls,
                platform.smtp_ports.implicit_tls,
            )
        if role != Role.front and settings.delivery.processes:
            log.info("delivering from %d child processes", settings.delivery.processes)
        elif role != Role.front:
            log.info("delivering from this process")
        await until_signal()
        log.info("stopping: finishing attempts under way, releasing the rest")
        await platform.stop()

    event_loop.run(run())


def world(
    smtp_port: Annotated[
        int, typer.Option(help="Port every MX server listens on (0 = any free port).")
    ] = 2525,
    dns_port: Annotated[
        int, typer.Option(help="Port of the DNS server on 127.0.0.1 (0 = any free port).")
    ] = 5353,
) -> None:
    """Run the simulated internet alone: DNS for *.test and the mailbox providers on 127.0.0.x."""
    from estafeta.world import World

    async def run() -> None:
        sim = World(dns_port=dns_port, smtp_port=smtp_port)
        await sim.start()
        table = Table(title="Simulated internet")
        table.add_column("domain")
        table.add_column("behaviour")
        for name, behaviour in sim.describe():
            table.add_row(name, behaviour)
        console.print(table)
        host, port = sim.dns_address
        console.print(
            f"DNS on {host}:{port}, MX servers on port {sim.smtp_port}, MTA-STS policy hosts on port "
            f"{sim.https_port}. Point a platform at it with\n"
            f"  ESTAFETA_DNS_SERVERS='[\"{host}:{port}\"]' ESTAFETA_DELIVERY__SMTP_PORT={sim.smtp_port} "
            f"ESTAFETA_MTA_STS__CA_FILE={sim.ca_file} ESTAFETA_MTA_STS__POLICY_PORT={sim.https_port} "
            "ESTAFETA_MTA_STS__ALLOW_PRIVATE_ADDRESSES=true estafeta serve\nCtrl-C stops."
        )
        console.print(
            f"Postmaster figures: {sim.postmaster_url}/<provider>/domains/<domain>/stats "
            "(set postmaster.sources to poll them)"
        )
        await until_signal()
        await sim.stop()

    event_loop.run(run())


def demo(
    messages: Annotated[
        int,
        typer.Option(
            "--messages", "-n", min=1, max=100_000, help="How many messages the healthy sender sends."
        ),
    ] = 3000,
    workdir: Annotated[Path, typer.Option(help="Where the demo's SQLite file is kept.")] = Path(
        "estafeta-demo"
    ),
    open_dashboard: Annotated[
        bool,
        typer.Option(
            "--open", help="Keep the platform running at the end and open its dashboard (Ctrl-C stops)."
        ),
    ] = False,
) -> None:
    """Run the whole platform against the simulated internet, with a healthy sender and one mailing a bought
    list, and show what happened to the mail and to the senders' standing."""
    from estafeta.demo import DemoResult, render, run_demo

    async def keep_open(result: DemoResult) -> None:
        import webbrowser

        render(result, console)
        console.print(f"\n[bold]Dashboard:[/] {result.dashboard}  (the platform runs until Ctrl-C)")
        await asyncio.to_thread(webbrowser.open, result.dashboard)
        await until_signal()

    try:
        result = event_loop.run(
            run_demo(messages, workdir, console, while_running=keep_open if open_dashboard else None)
        )
    except KeyboardInterrupt:
        console.print(
            "\n[yellow]Interrupted.[/] Mail already accepted is kept in "
            f"{workdir / 'estafeta-demo.db'}; resume delivering it with\n"
            f"  ESTAFETA_DATABASE_URL=sqlite:///{workdir / 'estafeta-demo.db'} estafeta serve"
        )
        raise typer.Exit(130) from None
    if not open_dashboard:
        render(result, console)
