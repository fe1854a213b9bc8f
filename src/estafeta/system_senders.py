"""The accounts that send the platform's own mail (reputation notices, TLS reports).

Each such mail goes out from an address of the settings (`notices.from`, `tls_reports.from`); its domain
is registered (with an Ed25519 DKIM key) to a system account the first time one is sent, or belongs to
whichever account registered it already. A system account is never limited by warm-up.
"""

from __future__ import annotations

from estafeta.accounts import Accounts
from estafeta.audit import SYSTEM
from estafeta.compose import parse_address
from estafeta.config import Settings
from estafeta.domains import Domains
from estafeta.store import reputation as reputation_store
from estafeta.store.db import Database


class SystemSenders:
    def __init__(self, db: Database, settings: Settings, accounts: Accounts, domains: Domains) -> None:
        self.db = db
        self.settings = settings
        self.accounts = accounts
        self.domains = domains

    async def account_for(self, account_name: str, address: str) -> int:
        """The account that sends from `address`: the owner of its domain, or else the account
        `account_name` (created if need be) with that domain added, exempt from warm-up."""
        domain = parse_address(address).domain
        row = await self.domains.find(domain)
        if row is not None:
            return row.account_id
        account = await self.accounts.find(account_name) or await self.accounts.create(
            account_name, actor=SYSTEM
        )
        await self.domains.add(account.id, domain, "ed25519-sha256", actor=SYSTEM)
        await self.db.run(reputation_store.set_tier, account.id, len(self.settings.warmup.tiers))
        return account.id
