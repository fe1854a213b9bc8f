"""Message composition: addresses, headers and MIME structure of outgoing mail."""

from estafeta.compose.addresses import Address, AddressError, parse_address
from estafeta.compose.headers import ComposeError, check_message, ensure_headers
from estafeta.compose.mime import Attachment, ComposedMessage, Draft, ListUnsubscribe, compose

__all__ = [
    "Address",
    "AddressError",
    "Attachment",
    "ComposeError",
    "ComposedMessage",
    "Draft",
    "ListUnsubscribe",
    "check_message",
    "compose",
    "ensure_headers",
    "parse_address",
]
