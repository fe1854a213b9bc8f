"""Forged tokens for the tests that check a signature is verified."""


def tampered(token: str) -> str:
    """`token` with one character of its signature changed where every bit counts: base64's last character
    may carry padding bits that a decoder ignores, so changing it can leave the signature valid."""
    at = len(token) - 3
    other = "B" if token[at] == "A" else "A"
    return token[:at] + other + token[at + 1 :]
