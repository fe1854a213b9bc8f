"""Contact input: an address normalised at the edge and a small set of scalar attributes."""

from __future__ import annotations

from typing import Any

from estafeta.audience.lists import AudienceError
from estafeta.compose import AddressError, parse_address
from estafeta.text import TextError, free_text

MAX_ATTRIBUTES = 50
MAX_NAME = 64
MAX_VALUE = 1000


def contact_email(value: str, field: str = "email") -> str:
    try:
        address = parse_address(value)
    except AddressError as exc:
        raise AudienceError(field, exc.reason) from exc
    if address.display_name:
        raise AudienceError(field, "give the bare address, without a display name")
    return address.email


def attributes(values: dict[str, Any], field: str = "attributes") -> dict[str, Any]:
    """Attributes are what templates and segments read: short names, scalar values."""
    if len(values) > MAX_ATTRIBUTES:
        raise AudienceError(field, f"at most {MAX_ATTRIBUTES} attributes")
    for name, value in values.items():
        if not name or len(name) > MAX_NAME or not name.replace("_", "").replace("-", "").isalnum():
            raise AudienceError(f"{field}.{name}", f"names are letters, digits, - and _, up to {MAX_NAME}")
        if name == "email":
            raise AudienceError(f"{field}.{name}", "the address is not an attribute")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise AudienceError(f"{field}.{name}", "values are strings, numbers or booleans")
        if isinstance(value, str) and len(value) > MAX_VALUE:
            raise AudienceError(f"{field}.{name}", f"values are at most {MAX_VALUE} characters")
        if isinstance(value, str):
            try:
                free_text(value)
            except TextError as exc:
                raise AudienceError(f"{field}.{name}", str(exc)) from exc
    return dict(values)
