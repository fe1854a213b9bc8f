"""Stage 1 — accept: both ways in (HTTP API, SMTP relay) and campaigns hand mail to `Accepter`.

`accepter` composes, lints, link-checks and signs; `gate` is the policy gate (suppression, standing,
warm-up limits) that runs inside the storing transaction; `commit` writes the messages of concurrent
callers in shared transactions. Nothing is answered 202/250 before that commit.
"""

from estafeta.accept.accepter import Accepted, Accepter, Submission
from estafeta.accept.commit import GroupCommit, store_batch
from estafeta.accept.errors import AcceptError
from estafeta.accept.gate import PolicyGate

__all__ = ["AcceptError", "Accepted", "Accepter", "GroupCommit", "PolicyGate", "Submission", "store_batch"]
