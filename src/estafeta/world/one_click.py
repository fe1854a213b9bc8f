"""RFC 8058 one-click unsubscribe as a receiver checks it: the headers bulk mail must carry."""

from __future__ import annotations

import ipaddress
import re
from email.parser import BytesHeaderParser
from urllib.parse import urlsplit

ONE_CLICK = "List-Unsubscribe=One-Click"
NO_ONE_CLICK = (
    "550 5.7.1 Bulk mail must offer one-click unsubscribe: a List-Unsubscribe https URI and "
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058)."
)
URI = re.compile(r"<([^<>]*)>")


def headers(data: bytes) -> dict[str, str]:
    """The message's header fields by lower-cased name, unfolded."""
    end = data.find(b"\r\n\r\n")
    parsed = BytesHeaderParser().parsebytes(data if end < 0 else data[: end + 2])
    return {name.lower(): " ".join(str(value).split()) for name, value in parsed.items()}


def loopback(host: str | None) -> bool:
    """The sandbox's pages live on 127.0.0.0/8 and have no public certificate: http there counts."""
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def one_click_uri(uris: list[str]) -> str | None:
    """The List-Unsubscribe URI a provider would POST to: https, or http on loopback."""
    for uri in uris:
        parts = urlsplit(uri)
        if (parts.scheme == "https" and parts.hostname) or (
            parts.scheme == "http" and loopback(parts.hostname)
        ):
            return uri
    return None


def one_click_problem(data: bytes) -> bool:
    """Whether bulk mail lacks what one-click unsubscribe needs (other mail never does)."""
    found = headers(data)
    if found.get("precedence", "").lower() != "bulk":
        return False
    uris = URI.findall(found.get("list-unsubscribe", ""))
    return one_click_uri(uris) is None or found.get("list-unsubscribe-post") != ONE_CLICK
