"""`/v1/usage`: the account's plan, its limits and what it has used this UTC day and calendar month."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from estafeta.api.deps import account_id, get_core
from estafeta.api.route import ApiRoute
from estafeta.core import Core

router = APIRouter(route_class=ApiRoute, prefix="/v1/usage", tags=["usage"])


class PlanOut(BaseModel):
    name: str
    messages_per_month: int | None = Field(description="null: no limit")
    messages_per_day: int | None
    contacts: int | None
    dedicated_pool: bool = Field(description="the account's streams may use a dedicated IP pool")


class UsageOut(BaseModel):
    plan: PlanOut | None = Field(description="null: the account is on no plan and has no volume limits")
    day: date = Field(description="the UTC day counted in messages_today")
    month: date = Field(description="first day of the calendar month counted in messages_this_month")
    messages_today: int = Field(description="recipients queued today (one message to three people is three)")
    messages_this_month: int
    contacts: int


@router.get("", response_model=UsageOut, summary="Usage against the account's plan")
async def usage(account: int = Depends(account_id), core: Core = Depends(get_core)) -> UsageOut:
    found = await core.plans.usage(account)
    plan = found.plan
    return UsageOut(
        plan=PlanOut(
            name=plan.name,
            messages_per_month=plan.messages_per_month,
            messages_per_day=plan.messages_per_day,
            contacts=plan.contacts,
            dedicated_pool=plan.dedicated_pool,
        )
        if plan
        else None,
        day=found.day,
        month=found.month,
        messages_today=found.messages_today,
        messages_this_month=found.messages_this_month,
        contacts=found.contacts,
    )
