"""`estafeta bench`: measure the platform's speed (a Rich table and a JSON file)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from estafeta.cli.common import console, fail

app = typer.Typer(
    help="Measure the platform's speed (results as a table and a JSON file).", no_args_is_help=True
)


@app.command("pipeline")
def pipeline(
    messages: Annotated[int, typer.Option("--messages", "-n", min=100, max=200_000)] = 5000,
    batch: Annotated[int, typer.Option(min=1, max=500, help="Messages per API request.")] = 100,
    algorithm: Annotated[str, typer.Option(help="DKIM algorithm.")] = "rsa-sha256",
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/pipeline.json"),
) -> None:
    """Messages/second from API accept to the receiver's 250, DKIM on, SQLite."""
    from estafeta.bench.pipeline import run_pipeline
    from estafeta.bench.report import report

    result = asyncio.run(run_pipeline(messages=messages, batch=batch, algorithm=algorithm, console=console))
    report("pipeline", result, output, console)


@app.command("smtp")
def smtp(
    messages: Annotated[int, typer.Option("--messages", "-n", min=100, max=200_000)] = 3000,
    sessions: Annotated[int, typer.Option(min=1, max=64, help="Parallel SMTP sessions.")] = 8,
    algorithm: Annotated[str, typer.Option(help="DKIM algorithm.")] = "rsa-sha256",
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/smtp.json"),
) -> None:
    """Messages/second accepted through the SMTP relay (STARTTLS, AUTH, DKIM on, SQLite)."""
    from estafeta.bench.report import report
    from estafeta.bench.smtp import run_smtp

    result = asyncio.run(run_smtp(messages=messages, sessions=sessions, algorithm=algorithm, console=console))
    report("smtp", result, output, console)


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
    backend: Annotated[
        list[str] | None, typer.Option(help="sqlite or postgresql (repeatable; default both).")
    ] = None,
    postgresql_url: Annotated[
        str, typer.Option(help="PostgreSQL server to use (a scratch schema is created and dropped).")
    ] = "postgresql://postgres@127.0.0.1:5432/test",
    processes: Annotated[int, typer.Option(min=0, max=8, help="delivery.processes of the platform.")] = 0,
    lease_seconds: Annotated[float, typer.Option(min=0.5, help="Queue lease (re-sends wait for it).")] = 3.0,
    seed: Annotated[int | None, typer.Option(help="Seed for the kill moments.")] = None,
    output: Annotated[Path, typer.Option(help="JSON result file.")] = Path("bench-results/crash.json"),
) -> None:
    """Lost and duplicated mail when `estafeta serve` is killed (SIGKILL) while delivering, per backend."""
    from estafeta.bench.crash import run_crash_bench
    from estafeta.bench.report import report

    chosen = backend or ["sqlite", "postgresql"]
    unknown = set(chosen) - {"sqlite", "postgresql"}
    if unknown:
        raise fail(f"unknown backend {', '.join(sorted(unknown))} (sqlite or postgresql)")
    result = asyncio.run(
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
