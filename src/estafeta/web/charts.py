"""Chart data for the overview: the statistics report turned into uPlot's columns, one chart per stream.

Every bucket of the period appears (zero where nothing happened), so that time runs evenly along the x
axis; the figures themselves are the report's, so the charts show what `GET /v1/stats` answers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from estafeta.stats import Report

SERIES = ("sent", "delivered", "deferred", "bounced", "complained", "opened", "clicked", "unsubscribed")
STREAMS = ("transactional", "broadcast")


def buckets(since: datetime, until: datetime, step: timedelta) -> list[datetime]:
    out, at = [], since
    while at < until:
        out.append(at)
        at += step
    return out


def stream_charts(report: Report) -> list[dict[str, Any]]:
    """Per stream: `x` (bucket starts, Unix seconds), one column per series and the period's totals."""
    step = timedelta(hours=1) if report.bucket == "hour" else timedelta(days=1)
    times = buckets(report.since, report.until, step)
    index = {t: i for i, t in enumerate(times)}
    charts = []
    for stream in STREAMS:
        columns = {name: [0] * len(times) for name in SERIES}
        for group in report.groups:
            if group.dimensions.get("stream") != stream or group.bucket not in index:
                continue
            for name in SERIES:
                columns[name][index[group.bucket]] += group.counts.get(name, 0)
        charts.append(
            {
                "stream": stream,
                "x": [int(t.timestamp()) for t in times],
                "names": list(SERIES),  # the series in the order the chart draws them
                "series": columns,
                "totals": {name: sum(values) for name, values in columns.items()},
            }
        )
    return charts
