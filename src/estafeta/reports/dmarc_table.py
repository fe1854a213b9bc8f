"""The DMARC view of a sending domain as a Rich table (`estafeta domains dmarc`)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from estafeta.reports.dmarc import Summary


def _rate(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "-"


def render(summary: Summary) -> Group:
    if not summary.reports:
        return Group(
            Text(f"No DMARC aggregate reports for {summary.domain} since {summary.since:%Y-%m-%d}."),
            Text("Receivers send them daily to the rua of the domain's DMARC record (see `domains dns`)."),
        )
    head = Text.assemble(
        (summary.domain, "bold"),
        f": {summary.messages} messages in {summary.reports} reports from {', '.join(summary.reporters)} "
        f"since {summary.since:%Y-%m-%d} · DKIM {_rate(summary.rate('dkim_pass'))} · SPF "
        f"{_rate(summary.rate('spf_pass'))} · DMARC {_rate(summary.rate('dmarc_pass'))} (aligned passes)",
    )
    table = Table()
    table.add_column("source IP", no_wrap=True)
    table.add_column("reverse DNS", overflow="fold")
    for name in ("messages", "DKIM pass", "SPF pass", "DMARC pass"):
        table.add_column(name, justify="right")
    table.add_column("sender", no_wrap=True)
    for source in summary.sources:
        table.add_row(
            source.ip,
            source.ptr or "-",
            str(source.messages),
            str(source.dkim_pass),
            str(source.spf_pass),
            str(source.dmarc_pass),
            "ours" if source.ours else Text("unknown", style="bold red"),
        )
    parts: list[Text | Table] = [head, table]
    unknown = summary.unknown
    if unknown:
        total = sum(s.messages for s in unknown)
        parts.append(
            Text(
                f"{len(unknown)} unknown sender(s) used {summary.domain} for {total} messages: authorise "
                "them (SPF, DKIM) if they are yours; if not, someone is spoofing the domain: move the DMARC "
                "policy to p=quarantine or p=reject once your own mail passes.",
                style="red",
            )
        )
    return Group(*parts)
