"""Request and response bodies of the messages and events resources."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from estafeta.api.params import OneLine

Scalar = str | int | float | bool


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255)
    content: str = Field(description="base64-encoded content")
    content_type: str = Field("application/octet-stream", pattern=r"^[\w.+-]+/[\w.+-]+$")
    content_id: str | None = Field(None, description="makes the attachment inline, referenced as cid:<id>")


class TrackingIn(BaseModel):
    """Override the account's tracking defaults for one message; omitted switches keep the default."""

    model_config = ConfigDict(extra="forbid")
    opens: StrictBool | None = Field(None, description="add an open pixel to the HTML part")
    clicks: StrictBool | None = Field(None, description="route the HTML part's links via the click redirect")


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from", description='"Name <user@domain>" or "user@domain"')
    to: list[str] = Field(default_factory=list, max_length=1000)
    cc: list[str] = Field(default_factory=list, max_length=1000)
    bcc: list[str] = Field(default_factory=list, max_length=1000)
    reply_to: list[str] = Field(default_factory=list, max_length=10)
    subject: str = Field("", max_length=998)
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=100)
    tags: list[Annotated[OneLine, Field(max_length=200)]] = Field(default_factory=list, max_length=10)
    metadata: dict[str, Scalar] = Field(default_factory=dict, max_length=50)
    stream: Literal["transactional", "broadcast"] = "transactional"
    tracking: TrackingIn | None = None


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[MessageIn] = Field(min_length=1)


class RecipientOut(BaseModel):
    email: str
    state: str
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_code: int | None = None
    last_reply: str | None = None
    reason: str | None = Field(None, description="why a `suppressed` or `held` recipient is not mailed")


class LintFindingOut(BaseModel):
    rule: str = Field(description="the compliance rule, see docs/compliance.md")
    severity: Literal["error", "warning"]
    message: str
    field: str


class AcceptedOut(BaseModel):
    id: str
    message_id: str = Field(description="the Message-ID header")
    recipients: list[RecipientOut]
    lint: list[LintFindingOut] = Field(
        default_factory=list, description="sender-guideline findings (settings `lint.mode = warn`)"
    )


class AcceptedBatchOut(BaseModel):
    messages: list[AcceptedOut]


class EventOut(BaseModel):
    id: int
    type: str
    created_at: datetime
    message_id: str | None
    recipient: str | None
    data: dict[str, Any]


class MessageOut(BaseModel):
    id: str
    state: Literal[
        "queued", "sending", "delivered", "bounced", "partially_delivered", "suppressed", "held", "cancelled"
    ]
    stream: str
    source: str
    from_: str = Field(serialization_alias="from")
    subject: str
    message_id: str
    size: int
    tags: list[str]
    metadata: dict[str, Any]
    created_at: datetime
    recipients: list[RecipientOut]
    events: list[EventOut]


class EventPage(BaseModel):
    data: list[EventOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")
