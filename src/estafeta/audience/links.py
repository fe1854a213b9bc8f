"""The public links of list mail: one-click unsubscribe, the mailto unsubscribe address, the preference
center, double opt-in confirmation and the hosted subscription form."""

from __future__ import annotations

from collections.abc import Callable

from estafeta.audience.tokens import Tokens

MAILTO_PREFIX = "unsub"


class Links:
    """`base_url` is read at each use: the API's port is only known once it listens."""

    def __init__(self, tokens: Tokens, base_url: Callable[[], str], return_path_domain: str) -> None:
        self.tokens = tokens
        self._base_url = base_url
        self.return_path_domain = return_path_domain

    @property
    def base(self) -> str:
        return self._base_url().rstrip("/")

    def unsubscribe_url(self, contact_id: int, list_id: int, campaign_id: int | None = None) -> str:
        return f"{self.base}/u/{self.tokens.unsubscribe(contact_id, list_id, campaign_id)}"

    def unsubscribe_mailto(self, contact_id: int, list_id: int, campaign_id: int | None = None) -> str:
        """`unsub+<token>@<return path domain>`, which the inbound listener accepts."""
        token = self.tokens.unsubscribe(contact_id, list_id, campaign_id)
        return f"{MAILTO_PREFIX}+{token}@{self.return_path_domain}"

    def preferences_url(self, contact_id: int) -> str:
        return f"{self.base}/p/{self.tokens.preferences(contact_id)}"

    def confirm_url(self, contact_id: int, list_id: int) -> str:
        return f"{self.base}/confirm/{self.tokens.confirm(contact_id, list_id)}"

    def form_url(self, public_id: str) -> str:
        return f"{self.base}/f/{public_id}"
