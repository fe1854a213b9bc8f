"""DMARC aggregate reports received, and their rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from estafeta.store.models import DmarcRecord, DmarcReport


@dataclass
class NewRecord:
    source_ip: str
    ptr: str
    count: int
    disposition: str
    dkim: str  # aligned DKIM as DMARC evaluated it: pass | fail
    spf: str  # aligned SPF: pass | fail
    header_from: str
    envelope_from: str
    auth_results: dict[str, Any] = field(default_factory=dict)


@dataclass
class NewReport:
    domain: str
    org_name: str
    org_email: str
    report_id: str
    begin_at: datetime
    end_at: datetime
    policy: dict[str, Any]
    records: list[NewRecord]


@dataclass(frozen=True)
class RecordRow:
    org_name: str
    report_id: str
    end_at: datetime
    source_ip: str
    ptr: str
    count: int
    dkim: str
    spf: str
    header_from: str


def save_report(conn: Connection, report: NewReport, now: datetime) -> bool:
    """Keep a report and its rows; False when the same reporter's report id is already kept."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(DmarcReport).values(
        domain=report.domain,
        org_name=report.org_name,
        org_email=report.org_email,
        report_id=report.report_id,
        begin_at=report.begin_at,
        end_at=report.end_at,
        policy=report.policy,
        messages=sum(r.count for r in report.records),
        received_at=now,
    )
    report_row = conn.execute(
        statement.on_conflict_do_nothing(index_elements=["org_name", "report_id"]).returning(DmarcReport.id)
    ).scalar()
    if report_row is None:
        return False
    if report.records:
        conn.execute(insert(DmarcRecord), [{"report_id": report_row, **vars(r)} for r in report.records])
    return True


def records_for(conn: Connection, domain: str, since: datetime) -> list[RecordRow]:
    """Rows about mail whose From domain is `domain` (or, where a row names none, about the report's
    domain), from reports whose period ends after `since`."""
    query = (
        select(
            DmarcReport.org_name,
            DmarcReport.report_id,
            DmarcReport.end_at,
            DmarcRecord.source_ip,
            DmarcRecord.ptr,
            DmarcRecord.count,
            DmarcRecord.dkim,
            DmarcRecord.spf,
            DmarcRecord.header_from,
        )
        .join(DmarcReport, DmarcReport.id == DmarcRecord.report_id)
        .where(DmarcReport.end_at >= since)
        .where(
            or_(
                DmarcRecord.header_from == domain,
                (DmarcRecord.header_from == "") & (DmarcReport.domain == domain),
            )
        )
        .order_by(DmarcReport.end_at, DmarcRecord.id)
    )
    return [RecordRow(*row) for row in conn.execute(query).all()]
