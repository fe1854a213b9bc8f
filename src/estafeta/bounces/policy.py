"""What a failure means for the address: the operator's choices, applied in one place.

The classifier finds a reason; this module turns it into the answer to the suppression question. Only a
dead address (unknown user, unknown domain, a mailbox that has moved, a domain that accepts no mail) is
suppressed, platform-wide, because it is dead for every sender. A disabled or suspended mailbox is not dead
(providers re-enable accounts), so it suppresses only as far as `suppression.disabled_mailbox` says.
Everything else, including any failure nobody recognised, suppresses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from estafeta.bounces.reasons import DEAD, Evidence, Kind, Reason

Scope = Literal["global", "account", "none"]


@dataclass(frozen=True)
class Policy:
    disabled_mailbox: Scope = "none"


DEFAULT_POLICY = Policy()


def judge(reason: Reason, policy: Policy) -> tuple[Kind, Scope, Evidence]:
    """The kind and suppression scope of a final (not transient) failure with this reason."""
    if reason in DEAD:
        return (
            Kind.HARD,
            "global",
            Evidence("policy", f"{reason} is a dead address: suppressed for every account"),
        )
    if reason is Reason.MAILBOX_DISABLED:
        scope = policy.disabled_mailbox
        if scope == "none":
            return (
                Kind.SOFT,
                "none",
                Evidence(
                    "policy",
                    "a disabled mailbox may come back (suppression.disabled_mailbox = none): not suppressed",
                ),
            )
        return (
            Kind.HARD,
            scope,
            Evidence(
                "policy",
                f"a disabled mailbox is suppressed on the {scope} list (suppression.disabled_mailbox)",
            ),
        )
    return Kind.SOFT, "none", Evidence("policy", f"{reason} says nothing against the address: not suppressed")
