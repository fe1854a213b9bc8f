"""One line of the doctor's report: what was checked, on what, how it went, and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """`warn` is something to look at that does not stop mail (a port nothing listens on yet); `fail`
    stops or spoils mail, and makes `estafeta doctor` exit non-zero."""

    check: str
    target: str
    status: Status
    detail: str
    fix: str = ""
