"""The mailbox providers of the default world and the behaviours they script.

Each provider reproduces one situation a sending platform must handle (authentication demands, rate
limits, unknown users, full mailboxes, greylisting, dead hosts, spam traps) with the replies real
providers give, so delivery, bounce classification and reputation code meet them on loopback. Some
mailboxes, picked by their local part, accept a message and then report back (late bounce, complaint,
out-of-office reply; see `estafeta.world.reports`).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from estafeta.clock import Clock

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
PLATFORM_HOST = "mta.estafeta.test"
PLATFORM_ADDRESS = "127.0.0.1"
# Addresses a sandbox platform may put in its `ip_pools`: each has a PTR name that resolves back to it.
SENDING_ADDRESSES = {f"127.0.0.{n}": f"mta{n}.estafeta.test" for n in range(2, 10)}
RETURN_PATH_DOMAIN = "bounces.estafeta.test"  # the platform's sandbox return path; its MX is the platform
RECORD_TTL = 300

UNAUTHENTICATED = "550 5.7.26 This mail has been blocked because the sender is unauthenticated."
RATE_LIMITED = (
    "421 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address."
)


def require_loopback(address: str) -> str:
    """The world never listens outside 127.0.0.0/8; refuse any other address early."""
    if ipaddress.ip_address(address) not in LOOPBACK:
        raise ValueError(f"{address} is not a 127.0.0.0/8 address")
    return address


Fault = Literal["hang-after-data", "reset-in-data", "broken-tls", "421-storm", "slow-loris"]
"""How a faulty receiver misbehaves (until the world is told to heal it):

- `hang-after-data`: takes the whole message, then never answers the end of DATA;
- `reset-in-data`: resets the connection (TCP RST) while the message is being sent;
- `broken-tls`: offers STARTTLS, answers 220 to it, then breaks the TLS handshake (plaintext works);
- `421-storm`: greets every connection with 421 and hangs up;
- `slow-loris`: trickles every reply, greeting included, a byte at a time.
"""


class RecipientPolicy(Protocol):
    """Decides a provider's own RCPT reply; remembers what it has seen until `reset`."""

    def check(self, peer: str, recipient: str) -> str | None:
        """The reply for `recipient` from client IP `peer`, or None to accept."""
        ...

    def reset(self) -> None: ...


class AcceptAll:
    def check(self, peer: str, recipient: str) -> str | None:
        return None

    def reset(self) -> None:
        pass


class UserUnknown:
    """Every mailbox is unknown except postmaster (RFC 5321 4.5.1 requires it to exist)."""

    def check(self, peer: str, recipient: str) -> str | None:
        if recipient.partition("@")[0].lower() == "postmaster":
            return None
        return f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown in virtual mailbox table"

    def reset(self) -> None:
        pass


class MailboxFullOnce:
    """The first attempt for each recipient finds the mailbox full; later attempts succeed. Mailboxes
    named `stuffed*` stay full for good (a persistent soft bounce)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def check(self, peer: str, recipient: str) -> str | None:
        key = recipient.lower()
        if key.startswith("stuffed"):
            return f"452 4.2.2 <{recipient}>: Mailbox full"
        if key in self._seen:
            return None
        self._seen.add(key)
        return f"452 4.2.2 <{recipient}>: Mailbox full"

    def reset(self) -> None:
        self._seen.clear()


class Greylist:
    """Defers the first (client IP, recipient) pair. The sender is left out of the triplet because
    return paths are per-message VERP addresses, so a retry would never match it."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def check(self, peer: str, recipient: str) -> str | None:
        key = (peer, recipient.lower())
        if key in self._seen:
            return None
        self._seen.add(key)
        return f"451 4.7.1 <{recipient}>: Recipient address rejected: Greylisted, try again later"

    def reset(self) -> None:
        self._seen.clear()


class RateLimit:
    """At most `limit` messages per client IP in any one-second window (a sliding window)."""

    WINDOW = 1.0

    def __init__(self, limit: int, clock: Clock) -> None:
        self._limit = limit
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}

    def allow(self, peer: str) -> bool:
        """Admit one message from `peer` if the window has room, counting it."""
        now = self._clock.now().timestamp()
        recent = self._recent.setdefault(peer, deque())
        while recent and recent[0] <= now - self.WINDOW:
            recent.popleft()
        if len(recent) >= self._limit:
            return False
        recent.append(now)
        return True

    def reset(self) -> None:
        self._recent.clear()


@dataclass(frozen=True)
class Provider:
    """One mailbox provider: its domain, where its MX listens, and how it treats mail."""

    domain: str
    mx_host: str
    address: str
    behaviour: str
    recipients: Callable[[], RecipientPolicy] = AcceptAll
    has_mx: bool = True  # False: only an A record on the domain (senders must fall back from MX to A)
    listening: bool = True  # False: nothing listens, so connections are refused
    requires_dkim: bool = False  # reject at end of DATA without a DKIM pass aligned with From
    # Check DKIM with dkimpy and Mail::DKIM, SPF with pyspf and DMARC alignment, and refuse mail that fails
    # DMARC when the From domain's policy is p=reject (estafeta.world.authentication).
    enforces_dmarc: bool = False
    rate_limited: bool = False  # subject to the world's per-IP message rate limit
    # (local-part prefix, "ndr" | "arf" | "auto-reply" | "abuse-quoted" | "abuse-attached")
    reports: tuple[tuple[str, str], ...] = ()
    requires_one_click: bool = False  # refuse bulk mail without RFC 8058 one-click unsubscribe
    unsubscribes: str | None = None  # how its users unsubscribe: "one-click" (POST) | "mailto"
    # MTA-STS and TLS-RPT (estafeta.world.mta_sts): the policy mode it publishes, the MX patterns its
    # policy names (empty: its own MX host), the certificate its MX presents ("self-signed", or issued by
    # the world's certificate authority: "trusted", "wrong-name"), and where its TLS reports go
    # ("mailto" or "https", both to the world's TLS-RPT receiver).
    mta_sts: str | None = None
    sts_mx: tuple[str, ...] = ()
    certificate: str = "self-signed"
    tls_reports: str | None = None
    fault: Fault | None = None  # how it misbehaves until healed (`World.heal`)

    def report_for(self, recipient: str) -> str | None:
        """What this provider mails back after accepting a message for `recipient`, if anything."""
        local = recipient.partition("@")[0].lower()
        return next((kind for prefix, kind in self.reports if local.startswith(prefix)), None)


PROVIDERS: tuple[Provider, ...] = (
    Provider(
        "gmail.test",
        "gmail-smtp-in.l.gmail.test",
        "127.0.0.11",
        "requires DKIM aligned with From (550 5.7.26); per-IP rate limit (421 4.7.28); bulk mail needs "
        "one-click unsubscribe (550 5.7.1); unsub* recipients unsubscribe with the RFC 8058 POST",
        requires_dkim=True,
        rate_limited=True,
        requires_one_click=True,
        unsubscribes="one-click",
    ),
    Provider(
        "yahoo.test",
        "mta5.am0.yahoodns.test",
        "127.0.0.12",
        "accepts; records the DKIM result; complainer* report the message as spam (ARF to the FBL address); "
        "angry* write to abuse@ the return-path domain quoting the message, phished* forward it there as an "
        "attachment calling it phishing; unsub* recipients unsubscribe by mail to the List-Unsubscribe "
        "mailto: address",
        reports=(("complainer", "arf"), ("angry", "abuse-quoted"), ("phished", "abuse-attached")),
        unsubscribes="mailto",
    ),
    Provider(
        "outlook.test",
        "outlook-com.olc.protection.outlook.test",
        "127.0.0.13",
        "accepts; records the DKIM result; gone* bounce late (DSN 5.1.1), ooo* answer out of office",
        reports=(("gone", "ndr"), ("ooo", "auto-reply")),
    ),
    Provider(
        "dmarc.test",
        "mx.dmarc.test",
        "127.0.0.45",
        "enforces DMARC: checks DKIM with dkimpy and Mail::DKIM, SPF with pyspf; refuses mail that fails "
        "DMARC (neither DKIM nor SPF aligned with From) when the From domain publishes p=reject "
        "(550 5.7.1 with the reason)",
        enforces_dmarc=True,
    ),
    Provider(
        "bounce.test",
        "mx.bounce.test",
        "127.0.0.14",
        "user unknown (550 5.1.1) except postmaster",
        UserUnknown,
    ),
    Provider(
        "full.test",
        "mx.full.test",
        "127.0.0.15",
        "mailbox full (452 4.2.2) on the first attempt per recipient; stuffed* always",
        MailboxFullOnce,
    ),
    Provider(
        "greylist.test",
        "mx.greylist.test",
        "127.0.0.16",
        "greylists (451 4.7.1) the first attempt per client IP and recipient",
        Greylist,
    ),
    Provider(
        "down.test", "mx.down.test", "127.0.0.17", "nothing listens: connection refused", listening=False
    ),
    Provider("nomx.test", "nomx.test", "127.0.0.18", "no MX record; accepts via its A record", has_mx=False),
    Provider("trap.test", "mx.trap.test", "127.0.0.19", "spam trap: accepts silently"),
    Provider(
        "secure.test",
        "mx.secure.test",
        "127.0.0.40",
        "MTA-STS enforce; its MX has a certificate from the world's authority; TLS reports by mail",
        mta_sts="enforce",
        certificate="trusted",
        tls_reports="mailto",
    ),
    Provider(
        "mxmismatch.test",
        "mx.mxmismatch.test",
        "127.0.0.41",
        "MTA-STS enforce, but its policy names another MX host (mail must not go to it); TLS reports "
        "by HTTPS",
        mta_sts="enforce",
        sts_mx=("mx.elsewhere.test",),
        certificate="trusted",
        tls_reports="https",
    ),
    Provider(
        "badcert.test",
        "mx.badcert.test",
        "127.0.0.42",
        "MTA-STS enforce, but its MX certificate names another host (mail must not go to it); TLS "
        "reports by mail",
        mta_sts="enforce",
        certificate="wrong-name",
        tls_reports="mailto",
    ),
    Provider(
        "ststesting.test",
        "mx.ststesting.test",
        "127.0.0.43",
        "MTA-STS testing with a self-signed MX certificate: mail is delivered, the failure reported",
        mta_sts="testing",
        tls_reports="mailto",
    ),
    Provider(
        "reports.test",
        "mx.reports.test",
        "127.0.0.44",
        "accepts; tlsrpt@reports.test receives TLS-RPT reports (see World.tls_reports)",
    ),
    Provider(
        "metered.test",
        "mx.metered.test",
        "127.0.0.46",
        "accepts; its sessions and messages are in the ledger, which tells the most sessions it had open at "
        "once and the most messages in any window (whatever number of senders they came from)",
    ),
    Provider(
        "hang.test",
        "mx.hang.test",
        "127.0.0.20",
        "takes the message, then never answers the end of DATA (until healed)",
        fault="hang-after-data",
    ),
    Provider(
        "reset.test",
        "mx.reset.test",
        "127.0.0.21",
        "resets the connection in the middle of DATA (until healed)",
        fault="reset-in-data",
    ),
    Provider(
        "badtls.test",
        "mx.badtls.test",
        "127.0.0.22",
        "offers STARTTLS, then breaks the handshake; accepts in plaintext (until healed)",
        fault="broken-tls",
    ),
    Provider(
        "storm.test",
        "mx.storm.test",
        "127.0.0.23",
        "421 storm: greets every connection with 421 4.7.0 and hangs up (until healed)",
        fault="421-storm",
    ),
    Provider(
        "slow.test",
        "mx.slow.test",
        "127.0.0.24",
        "slow-loris: trickles every reply a byte at a time (until healed)",
        fault="slow-loris",
    ),
)


def zone_records(providers: Sequence[Provider]) -> tuple[str, str]:
    """Zone text for the providers: (records relative to `test.`, records relative to `127.in-addr.arpa.`).

    Every provider gets its MX (or only an A record), SPF and DMARC; every address gets a PTR, and the
    platform's own address gets `mta.estafeta.test` both ways so reverse-DNS checks pass; the return
    path's SPF lets the platform's address and every sending address pass.
    """
    pools = " ".join(f"ip4:{address}" for address in SENDING_ADDRESSES)
    forward = [
        f"{PLATFORM_HOST}. {RECORD_TTL} IN A {PLATFORM_ADDRESS}",
        f"{RETURN_PATH_DOMAIN}. {RECORD_TTL} IN MX 10 {PLATFORM_HOST}.",
        f'{RETURN_PATH_DOMAIN}. {RECORD_TTL} IN TXT "v=spf1 a:{PLATFORM_HOST} {pools} -all"',
    ]
    reverse = [_ptr(PLATFORM_ADDRESS, PLATFORM_HOST)]
    addresses = [provider.address for provider in providers]
    shared = sorted({address for address in addresses if addresses.count(address) > 1})
    if shared:  # two MX servers cannot listen on one address and port
        raise ValueError(f"providers share an address: {', '.join(shared)}")
    for address, host in SENDING_ADDRESSES.items():
        forward.append(f"{host}. {RECORD_TTL} IN A {address}")
        reverse.append(_ptr(address, host))
    for provider in providers:
        require_loopback(provider.address)
        domain = f"{provider.domain}."
        if provider.has_mx:
            forward.append(f"{domain} {RECORD_TTL} IN MX 10 {provider.mx_host}.")
            forward.append(f"{provider.mx_host}. {RECORD_TTL} IN A {provider.address}")
        else:
            forward.append(f"{domain} {RECORD_TTL} IN A {provider.address}")
        forward.append(f'{domain} {RECORD_TTL} IN TXT "v=spf1 ip4:{provider.address} -all"')
        dmarc = f"v=DMARC1; p=reject; rua=mailto:dmarc-reports@{provider.domain}"
        forward.append(f'_dmarc.{domain} {RECORD_TTL} IN TXT "{dmarc}"')
        reverse.append(_ptr(provider.address, provider.mx_host))
    return "\n".join(forward) + "\n", "\n".join(reverse) + "\n"


def _ptr(address: str, host: str) -> str:
    relative = ".".join(reversed(address.split(".")[1:]))
    return f"{relative} {RECORD_TTL} IN PTR {host}."
