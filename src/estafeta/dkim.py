"""DKIM keys and signing (RFC 6376 rsa-sha256, RFC 8463 ed25519-sha256).

Canonicalization and header hashing come from dkimpy, so signatures match what dkimpy verifies; the
signature itself is made with `cryptography` (OpenSSL), which is an order of magnitude faster than dkimpy's
pure-Python RSA and is what lets one core sign hundreds of messages a second. OpenSSL computes an RSA
signature without holding the GIL (cryptography 47 and later), so `sign_async` has it made on a signing
thread while the event loop goes on serving other sessions.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import idna
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim import fold, hash_headers, rfc822_parse
from dkim.canonicalization import CanonicalizationPolicy, correct_empty_body, strip_trailing_lines

from estafeta.clock import Clock, SystemClock

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

_HEADER_NAME = b"DKIM-Signature"
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_SIGNED_HEADERS = frozenset(
    {
        b"from",
        b"to",
        b"cc",
        b"subject",
        b"date",
        b"message-id",
        b"reply-to",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"list-id",
        b"feedback-id",
        b"precedence",
        b"in-reply-to",
        b"references",
    }
)
# Listed once more than they occur, so that a second From or Subject added in transit breaks the signature.
_OVERSIGNED_HEADERS = (b"from", b"subject")
_SELECTOR = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*")
_MONTH_LETTERS = "abcdefghijkl"
# What relaxed body canonicalization (RFC 6376 3.4.4) changes: blanks before a line end, and runs of blanks
# other than one space.
_TRAILING_BLANKS = re.compile(rb"[\t ]+\r\n")
_BLANK_RUNS = re.compile(rb"[\t ]{2,}|\t")
# Threads make RSA signatures for event loops (`DkimSigner.sign_async`): one per core, as each keeps a core
# busy without the GIL; started on first use.
_SIGNING = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="estafeta-dkim")
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")  # dkimpy's, compiled once
_LINE_BREAKS = re.compile(rb"\r?\n")  # dkimpy's unfolding of a header value
_HEADER_BLANKS = re.compile(rb"[\t ]+")

_PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class DkimKey:
    """A signing key for one domain and selector.

    `private_key` is PEM (PKCS#8 or traditional) for rsa-sha256, and the base64 of the 32-byte seed for
    ed25519-sha256 (the format dkimpy uses).
    """

    domain: str
    selector: str
    algorithm: Algorithm
    private_key: str

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record_value(self) -> str:
        """The TXT record that publishes the public key."""
        private = _load_private_key(self)
        if isinstance(private, rsa.RSAPrivateKey):
            public = private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            kind = "rsa"
        else:
            public = private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            kind = "ed25519"
        return f"v=DKIM1; k={kind}; p={base64.b64encode(public).decode('ascii')}"


def _load_private_key(key: DkimKey) -> _PrivateKey:
    return _parsed_private_key(key.algorithm, key.private_key)


@functools.lru_cache(maxsize=1024)
def _parsed_private_key(algorithm: str, private_key: str) -> _PrivateKey:
    """Each key is parsed once per process: loading an RSA key checks it (about 100 ms), and accepting
    processes rebuild their signers every `SIGNER_REFRESH` with keys that rarely change."""
    if algorithm == "rsa-sha256":
        private = serialization.load_pem_private_key(private_key.encode("ascii"), password=None)
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ValueError("an rsa-sha256 key must be an RSA private key in PEM")
        return private
    if algorithm == "ed25519-sha256":
        seed = base64.b64decode(private_key, validate=True)
        if len(seed) != 32:
            raise ValueError("an ed25519-sha256 key must be the base64 of a 32-byte seed")
        return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    raise ValueError(f"unsupported DKIM algorithm {algorithm!r}")


def default_selector(now: datetime) -> str:
    """`est` + year + month letter (a = January): stable within a month, distinct across rotations."""
    return f"est{now.year}{_MONTH_LETTERS[now.month - 1]}"


def generate_key(
    domain: str,
    *,
    algorithm: Algorithm = "rsa-sha256",
    bits: int = 2048,
    selector: str | None = None,
    now: datetime | None = None,
) -> DkimKey:
    """Create a new key; `domain` may be an IDN and is stored as its A-label."""
    ascii_domain = idna.encode(domain.rstrip("."), uts46=True).decode("ascii")
    selector = selector if selector is not None else default_selector(now or datetime.now(UTC))
    if not _SELECTOR.fullmatch(selector):
        raise ValueError(f"the selector {selector!r} is not a lower-case DNS name")
    if algorithm == "rsa-sha256":
        if not 1024 <= bits <= 4096:
            raise ValueError("RSA keys must have 1024 to 4096 bits (RFC 8301; 2048 recommended)")
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        private_key = rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")
    elif algorithm == "ed25519-sha256":
        seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        private_key = base64.b64encode(seed).decode("ascii")
    else:
        raise ValueError(f"unsupported DKIM algorithm {algorithm!r}")
    return DkimKey(domain=ascii_domain, selector=selector, algorithm=algorithm, private_key=private_key)


def _signature_value(fields: list[tuple[bytes, bytes]]) -> bytes:
    return fold(b"; ".join(b"=".join(field) for field in fields), namelen=len(_HEADER_NAME))


def split_message(raw: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's `rfc822_parse` (header fields as [name, value with CRLF], and the body), which splits and
    joins again every line of the body; for a message with a header section and only CRLF line ends the
    body is taken as it stands and only the header lines are read. Any other message, or a header line
    dkimpy refuses, goes to `rfc822_parse` itself."""
    end = raw.find(b"\r\n\r\n")
    if end <= 0 or raw.count(b"\n") != raw.count(b"\r\n"):
        return rfc822_parse(raw)
    headers: list[list[bytes]] = []
    for line in raw[:end].split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1][1] += line + b"\r\n"
        elif (name := _FIELD_NAME.match(line)) is not None:
            headers.append([name.group(1), line[name.end() :] + b"\r\n"])
        elif not line.startswith(b"From "):
            return rfc822_parse(raw)
    return headers, raw[end + 4 :]


def relaxed_body(body: bytes) -> bytes:
    """dkimpy's relaxed body canonicalization, which rewrites every single space of the body with another
    one; this one substitutes only what changes, and a body that needs nothing is not rewritten at all."""
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _TRAILING_BLANKS.sub(b"\r\n", body)
    if b"\t" in body or b"  " in body:
        body = _BLANK_RUNS.sub(b" ", body)
    return correct_empty_body(strip_trailing_lines(body))


def relaxed_header_value(value: bytes) -> bytes:
    """dkimpy's relaxed canonicalization of a header value (RFC 6376 3.4.2: unfolded, blanks compressed to
    one space, none at either end, then CRLF), which runs two regular expressions over every value; a
    value on one line that needs neither is only stripped."""
    line = value[:-2] if value.endswith(b"\r\n") else value
    if b"\n" in line:
        line = _LINE_BREAKS.sub(b"", value)
    if b"\t" in line or b"  " in line:
        line = _HEADER_BLANKS.sub(b" ", line)
    return line.strip() + b"\r\n"


class _RelaxedHeaders:
    """dkimpy's relaxed header canonicalization (`dkim.canonicalization.Relaxed`), for `hash_headers`."""

    @staticmethod
    def canonicalize_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [(name.lower().rstrip(), relaxed_header_value(value)) for name, value in headers]


class DkimSigner:
    """Signs messages with one key (relaxed/relaxed, with a `t=` timestamp)."""

    def __init__(self, key: DkimKey, *, clock: Clock | None = None) -> None:
        self.key = key
        self._clock = clock or SystemClock()
        private = _load_private_key(key)
        self._sign_digest: Callable[[bytes], bytes]
        # An Ed25519 signature costs less than the trip to a thread and back; an RSA one about 0.25 ms.
        self._off_loop = isinstance(private, rsa.RSAPrivateKey)
        if isinstance(private, rsa.RSAPrivateKey):
            rsa_key = private
            self._sign_digest = lambda digest: rsa_key.sign(
                digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())
            )
        else:
            self._sign_digest = private.sign  # RFC 8463: Ed25519 over the SHA-256 of the header hash input
        self._tags = [
            (b"v", b"1"),
            (b"a", key.algorithm.encode("ascii")),
            (b"c", _RELAXED.to_c_value()),
            (b"d", key.domain.encode("ascii")),
            (b"s", key.selector.encode("ascii")),
        ]

    def sign(self, raw: bytes) -> bytes:
        """Return `raw` with a DKIM-Signature header prepended."""
        digest, fields = self._header_hash(raw)
        return _prepend(raw, fields, self._sign_digest(digest))

    async def sign_async(self, raw: bytes) -> bytes:
        """`sign` for an event loop: the canonicalization and hashing (Python) run here, an RSA signature on
        a signing thread, so that the loop serves other sessions while OpenSSL computes it."""
        digest, fields = self._header_hash(raw)
        if self._off_loop:
            signature = await asyncio.get_running_loop().run_in_executor(_SIGNING, self._sign_digest, digest)
        else:
            signature = self._sign_digest(digest)
        return _prepend(raw, fields, signature)

    def _header_hash(self, raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """What the key signs (the SHA-256 of the canonical headers and the signature's own header with b=
        empty), and the signature's tags."""
        headers, body = split_message(raw)
        signed = [name.lower() for name, _ in headers if name.lower() in _SIGNED_HEADERS]
        if b"from" not in signed:
            raise ValueError("a message without a From header cannot be DKIM-signed")
        include = [*signed, *_OVERSIGNED_HEADERS]
        body_hash = hashlib.sha256(relaxed_body(body)).digest()
        fields = [
            *self._tags,
            (b"t", str(int(self._clock.now().timestamp())).encode("ascii")),
            (b"h", b" : ".join(include)),
            (b"bh", base64.b64encode(body_hash)),
            # A placeholder as long as a signature keeps b= on its own folded line, as dkimpy does, so
            # the tags before it fold the same way once the real value is in.
            (b"b", b"0" * 60),
        ]
        header_hash = hashlib.sha256()
        hash_headers(
            header_hash,
            _RelaxedHeaders,
            _RelaxedHeaders.canonicalize_headers(headers),
            include,
            (_HEADER_NAME, b" " + _signature_value(fields)),
            None,
        )
        return header_hash.digest(), fields


def _prepend(raw: bytes, fields: list[tuple[bytes, bytes]], signature: bytes) -> bytes:
    fields[-1] = (b"b", base64.b64encode(signature))
    return _HEADER_NAME + b": " + _signature_value(fields) + b"\r\n" + raw
