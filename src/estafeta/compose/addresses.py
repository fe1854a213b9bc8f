"""Mailbox addresses, normalised once at the edge so that everything inside compares plain strings."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from email.headerregistry import Address as HeaderAddress
from email.utils import formataddr

from email_validator import EmailNotValidError, ValidatedEmail, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH

_QUOTED_PAIR = re.compile(r"\\(.)")
# An ASCII dot-atom local part (RFC 5322 3.2.3) at a domain of letters, digits, hyphens and dots: nearly
# every address; `validate_email` keeps such a local part as it is (`_plain_address`).
_PLAIN = re.compile(
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)@([A-Za-z0-9.-]+)"
)


class AddressError(ValueError):
    """An address that cannot be used; `reason` is meant to be shown to the person who typed it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _control_characters(text: str) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) == "Cc"})


@dataclass(frozen=True)
class Address:
    """A normalised mailbox: `email` is the envelope form (local part NFC, domain as lower-case A-label)."""

    email: str
    display_name: str = ""

    def __post_init__(self) -> None:
        # Guards every construction path, not only parse_address: a line break here would be header injection.
        if bad := _control_characters(self.display_name):
            raise AddressError(f"the display name contains control characters: {', '.join(bad)}")
        if "@" not in self.email:
            raise AddressError("an email address must contain an @-sign")

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]

    @property
    def smtputf8(self) -> bool:
        """True when the local part is non-ASCII, so the message needs SMTPUTF8 (RFC 6531)."""
        return not self.email.rpartition("@")[0].isascii()

    def header_address(self) -> HeaderAddress:
        """The stdlib form, for the header registry (which folds and encodes it)."""
        # From parts rather than addr_spec: the stdlib refuses to parse a non-ASCII local part.
        local, _, domain = self.email.rpartition("@")
        return HeaderAddress(display_name=self.display_name, username=local, domain=domain)

    def header_value(self) -> str:
        """The mailbox as it appears in From/To: display names quoted, or RFC 2047-encoded when non-ASCII."""
        if not self.display_name:
            return self.email
        if self.display_name.isascii() or self.smtputf8:
            # An SMTPUTF8 message carries UTF-8 headers as they are (RFC 6532), so no encoded words.
            return str(self.header_address())
        return formataddr((self.display_name, self.email), charset="utf-8")


def _split_display_name(value: str) -> tuple[str, str]:
    """Split `Name <a@b>` into its parts; a bare `a@b` has an empty display name."""
    if not value.endswith(">"):
        return "", value
    start = value.rfind("<")
    if start == -1:
        raise AddressError("the address ends with '>' but has no opening '<'")
    name = value[:start].strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = _QUOTED_PAIR.sub(r"\1", name[1:-1])
    return name, value[start + 1 : -1].strip()


def parse_address(value: str) -> Address:
    """Parse `"Name <a@b>"` or `"a@b"`; IDN domains become A-labels, `.test` domains are accepted."""
    return _parse_address(value.strip())


@functools.lru_cache(maxsize=16_384)
def _parse_address(value: str) -> Address:
    """Validated addresses are remembered (an `Address` cannot change): senders and campaign recipients
    repeat, and validating one (syntax, IDNA, NFC) costs far more than looking it up."""
    if not value:
        raise AddressError("the address is empty")
    display_name, addr_spec = _split_display_name(value)
    if bad := _control_characters(display_name):
        raise AddressError(f"the display name contains control characters: {', '.join(bad)}")
    email = _plain_address(addr_spec) or _validated(addr_spec)
    return Address(email=email, display_name=unicodedata.normalize("NFC", display_name))


def _plain_address(addr_spec: str) -> str | None:
    """`_validated(addr_spec)` for a plain address (`_PLAIN`) at a valid domain, from its domain's remembered
    validation: a relay or a campaign sees new recipients at the same few domains all the time. None when
    the address needs the whole validation (or is refused by it)."""
    plain = _PLAIN.fullmatch(addr_spec)
    if plain is None:
        return None
    local, domain = plain.groups()
    forms = _domain_forms(domain)
    if forms is None or local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        return None
    # The length limit as `validate_email` applies it: to the address as given, with the domain in
    # Unicode and in ASCII (the local part is ASCII, so its characters are octets).
    if len(local) + 1 + max(len(domain), len(forms[0].encode()), len(forms[1])) > EMAIL_MAX_LENGTH:
        return None
    return f"{local}@{forms[1]}"


@functools.lru_cache(maxsize=4096)
def _domain_forms(domain: str) -> tuple[str, str] | None:
    """A domain's Unicode and ASCII forms as `validate_email` gives them, or None when it refuses it."""
    try:
        validated = _validate(f"a@{domain}")
    except EmailNotValidError:
        return None
    return validated.domain, validated.ascii_domain


def _validated(addr_spec: str) -> str:
    """The envelope form of an address (local part NFC, domain as lower-case A-label), or `AddressError`."""
    try:
        validated = _validate(addr_spec)
    except EmailNotValidError as exc:
        raise AddressError(str(exc)) from None
    return f"{validated.local_part}@{validated.ascii_domain}"


def _validate(addr_spec: str) -> ValidatedEmail:
    return validate_email(addr_spec, check_deliverability=False, test_environment=True, allow_smtputf8=True)
