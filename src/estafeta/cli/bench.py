"""`estafeta bench`: measure the platform's speed (a Rich table and a JSON file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from estafeta import loop as event_loop
from estafeta.cli.common import console, fail

DEFAULT_POSTGRESQL_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

app = typer.Typer(
    help="Measure the platform's speed (results as a table and a JSON file).", no_args_is_help=True
)


Backends = Annotated[
    list[str] | None, typer.Option("--backend", help="sqlite or postgresql (repeatable; default both).")
]
PostgresqlUrl = Annotated[
    str, typer.Option(help="PostgreSQL server to use (a scratch schema is created and dropped).")
]


FrontProcesses = Annotated[
    int | None,
    typer.Option(
        min=1, max=64, help="front.processes: processes serving the API and relay (default: one per core)."
    ),
]


Nodes = Annotated[
    int,
    typer.Option(
        min=1,
        max=8,
        help="`estafeta serve` nodes on one database, each with its own ports; with several, limits are "
        "shared through --redis-url and the clients spread over the nodes.",
    ),
]
RedisUrl = Annotated[str, typer.Option(help="Redis where several nodes share their limits.")]


def _front_processes(chosen: int | None) -> int:
    import os

    return chosen or os.cpu_count() or 1


def _backends(chosen: list[str] | None) -> list[str]:
    from estafeta.bench.resources import BACKENDS

    unknown = sorted(set(chosen or ()) - set(BACKENDS))
    if unknown:
        raise fail(f"unknown backend {', '.join(unknown)} (sqlite or postgresql)")
    return chosen or list(BACKENDS)


@app.command("pipeline")
def pipeline(
    messages: Annotated[int, typer.Option("--messages", "-n", min=100, max=200_000)] = 5000,
    batch: Annotated[int, typer.Option(min=1, max=500, help="Messages per API request.")] = 100,
    algorithm: Annotated[str, typer.Option(help="DKIM algorithm.")] = "rsa-sha256",
    backend: Backends = None,
    postgresql_url: PostgresqlUrl = DEFAULT_POSTGRESQL_URL,
    front_processes: FrontProcesses = None,
    nodes: Nodes = 1,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/pipeline.json"),
) -> None:
    """Messages/second from API accept to the benchmark sink's 250, DKIM on, per database backend."""
    from estafeta.bench.pipeline import run_pipeline
    from estafeta.bench.report import report

    result = {
        name: event_loop.run(
            run_pipeline(
                messages=messages,
                batch=batch,
                algorithm=algorithm,
                backend=name,
                postgresql_url=postgresql_url,
                console=console,
                front_processes=_front_processes(front_processes),
                nodes=nodes,
                redis_url=redis_url,
            )
        )
        for name in _backends(backend)
    }
    report("pipeline", result, output, console)


@app.command("smtp")
def smtp(
    messages: Annotated[int, typer.Option("--messages", "-n", min=100, max=200_000)] = 3000,
    sessions: Annotated[int, typer.Option(min=1, max=64, help="Parallel SMTP sessions.")] = 8,
    algorithm: Annotated[str, typer.Option(help="DKIM algorithm.")] = "rsa-sha256",
    backend: Backends = None,
    postgresql_url: PostgresqlUrl = DEFAULT_POSTGRESQL_URL,
    front_processes: FrontProcesses = None,
    nodes: Nodes = 1,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/smtp.json"),
) -> None:
    """Messages/second accepted through the SMTP relay (STARTTLS, AUTH, DKIM on) and relayed to the sink."""
    from estafeta.bench.report import report
    from estafeta.bench.smtp import run_smtp

    result = {
        name: event_loop.run(
            run_smtp(
                messages=messages,
                sessions=sessions,
                algorithm=algorithm,
                backend=name,
                postgresql_url=postgresql_url,
                console=console,
                front_processes=_front_processes(front_processes),
                nodes=nodes,
                redis_url=redis_url,
            )
        )
        for name in _backends(backend)
    }
    report("smtp", result, output, console)


@app.command("campaign")
def campaign(
    contacts: Annotated[int, typer.Option("--contacts", "-n", min=100, max=1_000_000)] = 100_000,
    backend: Backends = None,
    postgresql_url: PostgresqlUrl = DEFAULT_POSTGRESQL_URL,
    time_limit: Annotated[float, typer.Option(min=10, help="Seconds per backend before giving up.")] = 3600,
    nodes: Nodes = 1,
    redis_url: RedisUrl = DEFAULT_REDIS_URL,
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/campaign.json"),
) -> None:
    """A campaign to a large list delivered to the benchmark sink: time to import, to queue (every recipient
    durably recorded), to deliver (within the time limit), and memory when all are queued, at 10k rendered
    and at the end, per database backend."""
    from estafeta.bench.campaign import run_campaign
    from estafeta.bench.report import report

    result = {
        name: event_loop.run(
            run_campaign(
                contacts=contacts,
                backend=name,
                postgresql_url=postgresql_url,
                time_limit=time_limit,
                console=console,
                nodes=nodes,
                redis_url=redis_url,
            )
        )
        for name in _backends(backend)
    }
    report("campaign", result, output, console)


@app.command("compare")
def compare(
    messages: Annotated[int, typer.Option("--messages", "-n", min=100, max=200_000)] = 5000,
    sessions: Annotated[int, typer.Option(min=1, max=64, help="Parallel SMTP sessions.")] = 8,
    backend: Backends = None,
    postgresql_url: PostgresqlUrl = DEFAULT_POSTGRESQL_URL,
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/compare.json"),
) -> None:
    """Estafeta against Postfix in one run, both relaying to the benchmark sink; rates, ratios, CPU.

    Needs Debian's postfix package (its smtp-source and smtp-sink too) and root: a private Postfix
    instance is configured and started under a temporary directory, on loopback ports."""
    from estafeta.bench.compare import run_compare
    from estafeta.bench.report import report

    chosen = _backends(backend)
    try:
        result = run_compare(
            messages=messages,
            sessions=sessions,
            backends=chosen,
            postgresql_url=postgresql_url,
            console=console,
        )
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    report("compare", result, output, console)


@app.command("sink")
def sink(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0: any free port).")] = 2525,
    seconds: Annotated[float, typer.Option(min=0.1, help="How long to listen.")] = 60.0,
    domain: Annotated[
        list[str] | None, typer.Option(help="Recipient domain its DNS server sends here (repeatable).")
    ] = None,
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/sink.json"),
) -> None:
    """A loopback SMTP sink for benchmarks (PIPELINING, keeps nothing), with a DNS server pointing at it.

    Relay a benchmark's mail here (e.g. Postfix's relayhost = [127.0.0.1]:PORT, or an Estafeta platform
    whose dns_servers is the address printed); it reports the messages received and their rate."""
    import time

    from estafeta.bench.report import report
    from estafeta.bench.sink import SinkProcess

    with SinkProcess(domain or ["gmail.test", "yahoo.test", "outlook.test"], port) as process:
        addresses = process.addresses
        console.print(
            f"sink on 127.0.0.1:{addresses.smtp_port}, DNS on "
            f"{addresses.dns_address[0]}:{addresses.dns_address[1]}; listening {seconds:g} s (Ctrl-C stops)"
        )
        started = time.perf_counter()
        first: float | None = None
        last = started
        seen = 0
        try:
            while time.perf_counter() - started < seconds:
                time.sleep(0.05)
                if process.received != seen:
                    seen, last = process.received, time.perf_counter()
                    first = first or last
        except KeyboardInterrupt:
            pass
    busy = last - first if first is not None and last > first else 0.0
    report(
        "sink",
        {
            "smtp_port": addresses.smtp_port,
            "messages": seen,
            "busy_seconds": round(busy, 3),
            "msgs_per_s": round(seen / busy, 1) if busy else 0.0,
        },
        output,
        console,
    )


@app.command("bounces")
def bounces(
    corpus: Annotated[
        Path,
        typer.Option(exists=True, file_okay=False, help="Directory of samples (default: the test corpus)."),
    ] = Path(__file__).resolve().parents[3] / "tests" / "data" / "bounces",
    rounds: Annotated[int, typer.Option(min=1, max=1000, help="Passes over the corpus.")] = 5,
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/bounces.json"),
) -> None:
    """Samples/second through the bounce classifier on one core (target: 500)."""
    from estafeta.bench.bounces import run_bounces
    from estafeta.bench.report import report

    result = run_bounces(corpus=corpus, rounds=rounds, console=console)
    report("bounces", result, output, console)


@app.command("crash")
def crash(
    messages: Annotated[int, typer.Option("--messages", "-n", min=50, max=200_000)] = 3000,
    kills: Annotated[int, typer.Option(min=1, max=500, help="SIGKILLs of the serve process group.")] = 10,
    backend: Backends = None,
    postgresql_url: PostgresqlUrl = DEFAULT_POSTGRESQL_URL,
    processes: Annotated[int, typer.Option(min=0, max=8, help="delivery.processes of the platform.")] = 0,
    lease_seconds: Annotated[float, typer.Option(min=0.5, help="Queue lease (re-sends wait for it).")] = 3.0,
    seed: Annotated[int | None, typer.Option(help="Seed for the kill moments.")] = None,
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/crash.json"),
) -> None:
    """Lost and duplicated mail when `estafeta serve` is killed (SIGKILL) while delivering, per backend."""
    from estafeta.bench.crash import run_crash_bench
    from estafeta.bench.report import report

    chosen = _backends(backend)
    result = event_loop.run(
        run_crash_bench(
            backends=chosen,
            postgresql_url=postgresql_url,
            messages=messages,
            kills=kills,
            processes=processes,
            lease_seconds=lease_seconds,
            seed=seed,
            console=console,
        )
    )
    report("crash", result, output, console)


@app.command("fuzz")
def fuzz(
    target: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", help="dsn, arf or smtp (repeatable; default: all three)."),
    ] = None,
    seconds: Annotated[int, typer.Option(min=1, max=86_400, help="How long to fuzz each target.")] = 60,
    runs: Annotated[
        int | None, typer.Option(min=1, help="Stop each target after this many inputs instead.")
    ] = None,
    seed: Annotated[
        list[Path] | None, typer.Option(help="Directories of sample inputs to start from (repeatable).")
    ] = None,
    work: Annotated[
        Path, typer.Option(help="Where the corpus grows and crash inputs are kept, per target.")
    ] = Path("bench-results/fuzz"),
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/fuzz.json"),
) -> None:
    """Fuzz the bounce and complaint parsers and the relay's SMTP commands with atheris (libFuzzer).

    Each target runs in a child process; an input that breaks one is saved as crash-… under --work and
    replays with `python -m estafeta.bench.fuzz <target> <file>`. Exits 1 when anything crashed."""
    from estafeta.bench.fuzz import TARGETS, run
    from estafeta.bench.report import report

    chosen = target or list(TARGETS)
    unknown = sorted(set(chosen) - set(TARGETS))
    if unknown:
        raise typer.BadParameter(f"unknown target {', '.join(unknown)}; one of {', '.join(TARGETS)}")
    results: dict[str, object] = {}
    crashed = []
    with console.status("fuzzing") as status:
        for name in chosen:
            status.update(f"fuzzing {name} ({f'{runs} inputs' if runs else f'{seconds} s'})")
            found = run(name, work, runs=runs, seconds=None if runs else seconds, seeds=seed)
            results |= {
                f"{name} inputs": found.runs,
                f"{name} seconds": found.seconds,
                f"{name} coverage": found.coverage,
                f"{name} corpus": found.corpus,
                f"{name} crashes": len(found.crashes),
            }
            crashed += [str(path) for path in found.crashes]
            if found.exit_code and not found.crashes:
                crashed.append(f"{name}: the fuzzer stopped with exit code {found.exit_code}")
    report("fuzz", results, output, console)
    for line in crashed:
        console.print(f"[red]crash:[/] {line}")
    if crashed:
        raise typer.Exit(1)
