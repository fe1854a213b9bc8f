"""`estafeta bench`: measure the platform's speed (a Rich table and a JSON file)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from estafeta.cli.common import console

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
