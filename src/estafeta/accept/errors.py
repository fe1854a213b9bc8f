"""Why the platform refuses mail, in words for the sender and as HTTP status and SMTP reply."""

from __future__ import annotations


class AcceptError(Exception):
    """A request the platform refuses; `field` names the offending input (e.g. `messages[2].from`).

    `errors` lists every problem as `{field, reason}` when there are several (lint findings).
    """

    def __init__(
        self,
        field: str,
        reason: str,
        *,
        status: int = 422,
        smtp: str = "550 5.7.1",
        errors: list[dict[str, str]] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status
        self.smtp = smtp
        self.errors = errors or [{"field": field, "reason": reason}]
        self.kind = kind  # the problem type's last segment, e.g. `account-paused`
