"""`/v1/messages`: send one message or a batch; look one up with its full history."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from fastapi import APIRouter, Body, Depends, Response
from pydantic import TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema

from estafeta.accept import Accepted, AcceptError, Submission
from estafeta.api.deps import account_id, get_core, sending_account
from estafeta.api.problems import Problem, validation_errors
from estafeta.api.route import ApiRoute
from estafeta.api.schemas import (
    AcceptedBatchOut,
    AcceptedOut,
    BatchIn,
    EventOut,
    LintFindingOut,
    MessageIn,
    MessageOut,
    RecipientOut,
)
from estafeta.compose import Address, AddressError, Attachment, Draft, parse_address
from estafeta.core import Core
from estafeta.tracking import TrackingOverride

router = APIRouter(route_class=ApiRoute, prefix="/v1/messages", tags=["messages"])

_BATCH = TypeAdapter(BatchIn)
_SINGLE = TypeAdapter(MessageIn)
_ANSWER_IN_PLACE = 200  # recipients in an answer built on the event loop; a larger one is built off it

_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/MessageIn"},
                        {"$ref": "#/components/schemas/BatchIn"},
                    ]
                }
            }
        },
    }
}


def body_schemas() -> dict[str, Any]:
    """The schemas `_BODY_SCHEMA` names, for the document's components (the body is read by hand)."""
    _, found = models_json_schema(
        [(MessageIn, "validation"), (BatchIn, "validation")], ref_template="#/components/schemas/{model}"
    )
    return dict(found.get("$defs", {}))


def _address(value: str, where: str, errors: list[dict[str, str]]) -> Address | None:
    try:
        return parse_address(value)
    except AddressError as exc:
        errors.append({"field": where, "reason": exc.reason})
        return None


def _addresses(values: list[str], where: str, errors: list[dict[str, str]]) -> list[Address]:
    found = [_address(v, f"{where}[{i}]", errors) for i, v in enumerate(values)]
    return [a for a in found if a is not None]


def _submission(
    msg: MessageIn, where: str, errors: list[dict[str, str]], max_recipients: int
) -> Submission | None:
    count = len(msg.to) + len(msg.cc) + len(msg.bcc)
    if count > max_recipients:
        reason = f"at most {max_recipients} recipients (to, cc and bcc together) per message; got {count}"
        errors.append({"field": f"{where}to", "reason": reason})
        return None
    before = len(errors)
    sender = _address(msg.from_, f"{where}from", errors)
    to = _addresses(msg.to, f"{where}to", errors)
    cc = _addresses(msg.cc, f"{where}cc", errors)
    bcc = _addresses(msg.bcc, f"{where}bcc", errors)
    reply_to = _addresses(msg.reply_to, f"{where}reply_to", errors)
    if not (msg.to or msg.cc or msg.bcc):
        errors.append({"field": f"{where}to", "reason": "at least one recipient (to, cc or bcc) is required"})
    if msg.text is None and msg.html is None:
        errors.append({"field": f"{where}text", "reason": "a text or html body is required"})
    attachments: list[Attachment] = []
    for i, att in enumerate(msg.attachments):
        try:
            content = base64.b64decode(att.content, validate=True)
        except (binascii.Error, ValueError):
            errors.append({"field": f"{where}attachments[{i}].content", "reason": "is not valid base64"})
            continue
        attachments.append(Attachment(att.filename, content, att.content_type, att.content_id))
    if len(errors) > before or sender is None:
        return None
    draft = Draft(
        from_=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=msg.subject,
        text=msg.text,
        html=msg.html,
        headers=msg.headers,
        attachments=attachments,
        stream=msg.stream,
        tags=msg.tags,
    )
    tracking = TrackingOverride(msg.tracking.opens, msg.tracking.clicks) if msg.tracking else None
    return Submission(draft, msg.tags, dict(msg.metadata), tracking)


@router.post(
    "",
    status_code=202,
    response_model=AcceptedBatchOut,
    openapi_extra=_BODY_SCHEMA,
    summary="Send one message or a batch",
    description=(
        'Accepts a single message object, or `{"messages": [...]}`. Answers 202 only once every message is '
        "durably queued; a batch is all or nothing. Invalid input gets a problem+json body whose `errors` "
        "name each field and reason."
    ),
)
async def send(
    body: Any = Body(..., include_in_schema=False),
    account: int = Depends(sending_account),
    core: Core = Depends(get_core),
) -> Response:
    if not isinstance(body, dict):
        raise Problem(
            422, "the body must be a JSON object", errors=[{"field": "body", "reason": "not an object"}]
        )
    limits = core.settings.api
    # Validating thousands of messages and checking their addresses take a while: off the event loop, so
    # no one else waits for them.
    subs = await asyncio.to_thread(_submissions, body, limits.max_batch, limits.max_recipients)
    try:
        accepted = await core.accepter.accept(account, subs, prefix="messages" if "messages" in body else "")
    except AcceptError as exc:
        raise Problem(exc.status, f"{exc.field}: {exc.reason}", errors=exc.errors, kind=exc.kind) from exc
    if sum(len(a.recipients) + len(a.suppressed) for a in accepted) > _ANSWER_IN_PLACE:
        return await asyncio.to_thread(_answer, accepted)
    return _answer(accepted)


def _submissions(body: dict[str, Any], max_batch: int, max_recipients: int) -> list[Submission]:
    """The request's messages, validated, or the problem that answers it (on a worker thread)."""
    batch = "messages" in body
    try:
        messages = _BATCH.validate_python(body).messages if batch else [_SINGLE.validate_python(body)]
    except ValidationError as exc:
        errors = validation_errors(exc)
        raise Problem(422, "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors=errors) from exc
    if len(messages) > max_batch:
        raise Problem(413, f"a batch holds at most {max_batch} messages; got {len(messages)}")
    errors: list[dict[str, str]] = []
    subs = [
        _submission(m, f"messages[{i}]." if batch else "", errors, max_recipients)
        for i, m in enumerate(messages)
    ]
    if errors:
        raise Problem(422, "; ".join(f"{e['field']}: {e['reason']}" for e in errors), errors=errors)
    return [s for s in subs if s is not None]


def _answer(accepted: list[Accepted]) -> Response:
    """The 202 answer, serialized as FastAPI would serialize `AcceptedBatchOut`."""
    out = AcceptedBatchOut(
        messages=[
            AcceptedOut(
                id=a.id,
                message_id=a.message_id_header,
                lint=[LintFindingOut(**f.as_dict()) for f in a.lint],
                recipients=[RecipientOut(email=r, state="held" if a.held else "queued") for r in a.recipients]
                + [
                    RecipientOut(email=s.recipient, state="suppressed", reason=s.reason) for s in a.suppressed
                ],
            )
            for a in accepted
        ]
    )
    return Response(out.model_dump_json(by_alias=True), status_code=202, media_type="application/json")


def _overall(states: list[str]) -> str:
    """The message's state; suppressed recipients only count when no one else was mailed."""
    mailed = [s for s in states if s != "suppressed"]
    if not mailed:
        return "suppressed"
    states = mailed
    if "held" in states:
        return "held"
    if all(s == "cancelled" for s in states):
        return "cancelled"
    if any(s in ("queued", "deferred") for s in states):
        return "queued"
    if all(s == "delivered" for s in states):
        return "delivered"
    if all(s == "bounced" for s in states):
        return "bounced"
    return "partially_delivered"


@router.get(
    "/{message_id}",
    response_model=MessageOut,
    response_model_by_alias=True,
    summary="A message's state and events",
)
async def get_message(
    message_id: str, account: int = Depends(account_id), core: Core = Depends(get_core)
) -> MessageOut:
    view = await core.messages.get(account, message_id)
    if view is None:
        raise Problem(404, f"no message {message_id} in this account")
    reasons = {e.recipient: e.data.get("reason") for e in view.events if e.type == "suppressed"}
    reasons.update(
        {e.recipient: "; ".join(e.data.get("reasons", [])) for e in view.events if e.type == "held"}
    )
    return MessageOut(
        id=view.id,
        state=_overall([r.state for r in view.recipients]),  # type: ignore[arg-type]
        stream=view.stream,
        source=view.source,
        from_=view.from_address,
        subject=view.subject,
        message_id=view.message_id_header,
        size=view.size,
        tags=view.tags,
        metadata=view.meta,
        created_at=view.created_at,
        recipients=[
            RecipientOut(
                email=r.recipient,
                state=r.state,
                attempts=r.attempts,
                next_attempt_at=r.next_attempt_at if r.state in ("queued", "deferred") else None,
                last_code=r.last_code,
                last_reply=r.last_reply,
                reason=reasons.get(r.recipient) if r.state in ("suppressed", "held") else None,
            )
            for r in view.recipients
        ],
        events=[EventOut(**e.__dict__) for e in view.events],
    )
