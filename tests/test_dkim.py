"""DKIM keys and signatures, verified by dkimpy against keys published on a loopback DNS server."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import dkim
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import CanonicalizationPolicy
from dns.rdtypes.ANY.TXT import TXT
from hypothesis import given, settings
from hypothesis import strategies as st

from estafeta.clock import ManualClock
from estafeta.compose import Address, Attachment, Draft, compose, ensure_headers, parse_address
from estafeta.dkim import (
    DkimKey,
    DkimSigner,
    generate_key,
    relaxed_body,
    relaxed_header_value,
    split_message,
)

SIGNED_AT = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)


class LoopbackDns:
    """An authoritative UDP DNS server on 127.0.0.1 answering TXT queries from `records`."""

    def __init__(self) -> None:
        self.records: dict[str, str] = {}
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.port: int = self._socket.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def publish(self, key: DkimKey) -> None:
        self.records[key.record_name] = key.record_value

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            question = query.question[0]
            value = self.records.get(question.name.to_text(omit_final_dot=True).lower())
            if value is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                strings = [value[i : i + 255].encode() for i in range(0, len(value), 255)]
                rrset = response.find_rrset(
                    response.answer, question.name, dns.rdataclass.IN, dns.rdatatype.TXT, create=True
                )
                rrset.add(TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings), ttl=60)
            self._socket.sendto(response.to_wire(), peer)

    def txt_lookup(self) -> Callable[..., bytes | None]:
        """A dkimpy `dnsfunc` that really queries this server with dnspython."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.use_edns(0, 0, 1232)

        def get_txt(name: bytes, timeout: float = 5) -> bytes | None:
            try:
                answer = resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout)
            except dns.resolver.NXDOMAIN:
                return None
            return b"".join(b"".join(record.strings) for record in answer)

        return get_txt

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


@pytest.fixture(scope="module")
def dns_server() -> Iterator[LoopbackDns]:
    server = LoopbackDns()
    yield server
    server.close()


@pytest.fixture(scope="module")
def rsa_key(dns_server: LoopbackDns) -> DkimKey:
    key = generate_key("shop.test", selector="rsa1")
    dns_server.publish(key)
    return key


@pytest.fixture(scope="module")
def ed25519_key(dns_server: LoopbackDns) -> DkimKey:
    key = generate_key("shop.test", algorithm="ed25519-sha256", selector="ed1")
    dns_server.publish(key)
    return key


@pytest.fixture(params=["rsa", "ed25519"])
def key(request: pytest.FixtureRequest, rsa_key: DkimKey, ed25519_key: DkimKey) -> DkimKey:
    return rsa_key if request.param == "rsa" else ed25519_key


def verify(signed: bytes, dns_server: LoopbackDns) -> bool:
    return bool(dkim.verify(signed, dnsfunc=dns_server.txt_lookup()))


def signature_tags(signed: bytes) -> dict[str, str]:
    header = re.match(rb"DKIM-Signature: (.*?)\r\n(?=\S)", signed, re.S)
    assert header is not None
    unfolded = re.sub(r"\s+", "", header.group(1).decode())
    return dict(tag.split("=", 1) for tag in unfolded.split(";"))


def add_header(raw: bytes, line: bytes) -> bytes:
    """Append a header field at the end of the header section, as a relay in transit might."""
    return raw.replace(b"\r\n\r\n", b"\r\n" + line + b"\r\n\r\n", 1)


def message(**changes: object) -> bytes:
    fields: dict = {
        "from_": Address("news@shop.test", "Shop"),
        "to": [Address("alice@example.test", "Alice")],
        "subject": "Your order",
        "text": "Thanks!\n",
    }
    fields.update(changes)
    return compose(Draft(**fields), message_id="msg_1", now=NOW).raw


MESSAGES = {
    "plain": message(),
    "non-ascii headers": message(
        from_=Address("news@shop.test", "Böcker & Söhne"),
        subject="Ünïcödé sübjéct that is long enough to be folded over several lines of header " * 2,
        headers={"X-Greeting": "¡Hola!"},
        text="Grüße\n",
    ),
    "smtputf8": message(to=[parse_address("Zoë <zoë@bücher.test>")], subject="Grüße"),
    "attachments": message(
        html='<p>Hi <img src="cid:logo"></p>',
        attachments=[
            Attachment("Résumé.pdf", bytes(range(256)) * 30, "application/pdf"),
            Attachment("logo.png", b"\x89PNG\r\n" + bytes(64), "image/png", "logo"),
        ],
    ),
    "long lines": message(text="word " * 2000 + "\n", html="<p>" + "x" * 5000 + "</p>"),
    "broadcast": compose(
        Draft(
            from_=Address("news@shop.test"),
            to=[Address("alice@example.test")],
            subject="Sale",
            text="50% off\n",
            stream="broadcast",
            headers={
                "List-Unsubscribe": "<https://shop.test/u/" + "t" * 120 + ">, <mailto:u@shop.test>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        ),
        message_id="msg_2",
        now=NOW,
        feedback_id="c1:a1:news:est",
    ).raw,
}


# --- keys ---------------------------------------------------------------------------------------------------


def test_rsa_key_generation() -> None:
    key = generate_key("Bücher.test", now=NOW)
    assert key.domain == "xn--bcher-kva.test"
    assert key.selector == "est2026k"
    assert key.algorithm == "rsa-sha256"
    assert key.record_name == "est2026k._domainkey.xn--bcher-kva.test"
    private = serialization.load_pem_private_key(key.private_key.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    match = re.fullmatch(r"v=DKIM1; k=rsa; p=([A-Za-z0-9+/=]+)", key.record_value)
    assert match is not None
    public = serialization.load_der_public_key(base64.b64decode(match.group(1)))
    assert public.public_numbers() == private.public_key().public_numbers()


def test_ed25519_key_generation() -> None:
    key = generate_key("shop.test", algorithm="ed25519-sha256", selector="s2026")
    seed = base64.b64decode(key.private_key)
    assert len(seed) == 32
    expected = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    match = re.fullmatch(r"v=DKIM1; k=ed25519; p=([A-Za-z0-9+/=]+)", key.record_value)
    assert match is not None
    assert base64.b64decode(match.group(1)) == expected.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def test_default_selector_follows_the_month() -> None:
    assert generate_key("shop.test", algorithm="ed25519-sha256", now=SIGNED_AT).selector == "est2026a"
    december = datetime(2027, 12, 31, tzinfo=UTC)
    assert generate_key("shop.test", algorithm="ed25519-sha256", now=december).selector == "est2027l"


@pytest.mark.parametrize(
    ("kwargs", "message_part"),
    [
        ({"bits": 512}, "1024 to 4096"),
        ({"selector": "Bad_Selector"}, "selector"),
        ({"selector": "-x"}, "selector"),
        ({"algorithm": "rsa-sha1"}, "unsupported"),
    ],
)
def test_generate_key_rejects_bad_parameters(kwargs: dict, message_part: str) -> None:
    with pytest.raises(ValueError, match=message_part):
        generate_key("shop.test", **kwargs)


def test_traditional_rsa_pem_signs(dns_server: LoopbackDns, rsa_key: DkimKey) -> None:
    private = serialization.load_pem_private_key(rsa_key.private_key.encode(), password=None)
    traditional = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    assert traditional.startswith("-----BEGIN RSA PRIVATE KEY-----")
    key = DkimKey("shop.test", "rsa1", "rsa-sha256", traditional)
    assert key.record_value == rsa_key.record_value
    assert verify(DkimSigner(key).sign(MESSAGES["plain"]), dns_server)


def test_mismatched_key_material_is_refused(rsa_key: DkimKey, ed25519_key: DkimKey) -> None:
    with pytest.raises(ValueError):
        DkimSigner(DkimKey("shop.test", "x", "ed25519-sha256", rsa_key.private_key))
    with pytest.raises(ValueError):
        DkimSigner(DkimKey("shop.test", "x", "rsa-sha256", ed25519_key.private_key))


# --- signatures ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MESSAGES)
def test_signature_verifies_with_dkimpy(name: str, key: DkimKey, dns_server: LoopbackDns) -> None:
    raw = MESSAGES[name]
    signed = DkimSigner(key, clock=ManualClock(SIGNED_AT)).sign(raw)
    assert signed.endswith(raw)
    assert signed.startswith(b"DKIM-Signature: v=1; a=" + key.algorithm.encode())
    assert all(len(line) <= 78 for line in signed[: len(signed) - len(raw)].split(b"\r\n"))
    assert verify(signed, dns_server)


@pytest.mark.parametrize("name", MESSAGES)
def test_signing_for_an_event_loop_gives_the_same_bytes_with_rsa_made_on_a_signing_thread(
    name: str, key: DkimKey, dns_server: LoopbackDns
) -> None:
    signer = DkimSigner(key, clock=ManualClock(SIGNED_AT))
    sign_digest = signer._sign_digest
    threads: list[str] = []

    def recorded(digest: bytes) -> bytes:
        threads.append(threading.current_thread().name)
        return sign_digest(digest)

    signer._sign_digest = recorded
    signed = asyncio.run(signer.sign_async(MESSAGES[name]))
    assert signed == signer.sign(MESSAGES[name])  # both algorithms' signatures are deterministic
    assert verify(signed, dns_server)
    loop_thread = threading.current_thread().name
    if key.algorithm == "rsa-sha256":  # about 0.25 ms that OpenSSL computes without the GIL
        assert threads[0].startswith("estafeta-dkim") and threads[1] == loop_thread
    else:  # cheaper than the trip to a thread
        assert threads == [loop_thread, loop_thread]


def test_signature_tags(rsa_key: DkimKey) -> None:
    signed = DkimSigner(rsa_key, clock=ManualClock(SIGNED_AT)).sign(MESSAGES["broadcast"])
    tags = signature_tags(signed)
    assert tags["v"] == "1"
    assert tags["a"] == "rsa-sha256"
    assert tags["c"] == "relaxed/relaxed"
    assert tags["d"] == "shop.test"
    assert tags["s"] == "rsa1"
    assert tags["t"] == str(int(SIGNED_AT.timestamp()))
    assert tags["h"].split(":") == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "precedence",
        "feedback-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "content-type",
        "content-transfer-encoding",
        "from",
        "subject",
    ]


def test_unlisted_and_trace_headers_are_not_signed(rsa_key: DkimKey, dns_server: LoopbackDns) -> None:
    raw = b"Received: from app.test\r\nX-Mailer: app\r\nBcc: eve@example.test\r\n" + MESSAGES["plain"]
    signed = DkimSigner(rsa_key).sign(raw)
    assert {"received", "x-mailer", "bcc"}.isdisjoint(signature_tags(signed)["h"].split(":"))
    assert verify(signed, dns_server)


def test_relayed_message_signs_after_ensure_headers(key: DkimKey, dns_server: LoopbackDns) -> None:
    relayed = b"From: App <app@shop.test>\r\nTo: alice@example.test\r\nSubject: Hi\r\n\r\nHello\r\n"
    raw, _ = ensure_headers(relayed, message_id="m1", sending_domain="shop.test", now=NOW)
    assert verify(DkimSigner(key).sign(raw), dns_server)


def test_message_without_from_is_refused(rsa_key: DkimKey) -> None:
    with pytest.raises(ValueError, match="From"):
        DkimSigner(rsa_key).sign(b"To: a@example.test\r\n\r\nx\r\n")


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(lambda m: m.replace(b"\r\nSubject: ", b"\r\nSUBJECT:    "), id="name case and spaces"),
        pytest.param(lambda m: m.replace(b"\r\nTo: ", b"\r\nTo:\r\n\t"), id="refolded header"),
        pytest.param(lambda m: m.replace(b"Thanks!\r\n", b"Thanks!  \t\r\n"), id="trailing whitespace"),
        pytest.param(lambda m: m + b"\r\n\r\n\r\n", id="trailing blank lines"),
        pytest.param(lambda m: b"Received: by mx.example.test\r\n" + m, id="trace header added"),
        pytest.param(lambda m: add_header(m, b"X-Spam: no"), id="unsigned header"),
    ],
)
def test_relaxed_neutral_rewrites_still_verify(
    rewrite: Callable[[bytes], bytes], key: DkimKey, dns_server: LoopbackDns
) -> None:
    signed = DkimSigner(key).sign(MESSAGES["plain"])
    rewritten = rewrite(signed)
    assert rewritten != signed
    assert verify(rewritten, dns_server)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"Thanks!", b"Thanks?"), id="body changed"),
        pytest.param(lambda m: m.replace(b"Your order", b"Your 0rder"), id="subject changed"),
        pytest.param(
            lambda m: m.replace(b"\r\n\r\n", b"\r\nSubject: Act now\r\n\r\n", 1), id="second subject"
        ),
        pytest.param(
            lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: ceo@shop.test\r\n\r\n", 1), id="second from"
        ),
    ],
)
def test_tampering_breaks_the_signature(
    tamper: Callable[[bytes], bytes], key: DkimKey, dns_server: LoopbackDns
) -> None:
    signed = DkimSigner(key).sign(MESSAGES["plain"])
    assert verify(signed, dns_server)
    tampered = tamper(signed)
    assert tampered != signed
    assert not verify(tampered, dns_server)


def test_wrong_published_key_fails(dns_server: LoopbackDns) -> None:
    signing = generate_key("other.test", algorithm="ed25519-sha256", selector="k1")
    dns_server.publish(generate_key("other.test", algorithm="ed25519-sha256", selector="k1"))
    assert not verify(DkimSigner(signing).sign(MESSAGES["plain"]), dns_server)


def test_unpublished_selector_fails(dns_server: LoopbackDns) -> None:
    unpublished = generate_key("shop.test", algorithm="ed25519-sha256", selector="nowhere")
    assert not verify(DkimSigner(unpublished).sign(MESSAGES["plain"]), dns_server)


@settings(max_examples=60, deadline=None)
@given(
    subject=st.text(
        st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\u2028\u2029"), max_size=200
    ),
    text=st.text(
        st.characters(exclude_characters="\0", exclude_categories=("Cs",)), min_size=1, max_size=1500
    ),
    algorithm=st.sampled_from(["rsa", "ed25519"]),
)
def test_any_unicode_message_verifies(
    subject: str,
    text: str,
    algorithm: str,
    rsa_key: DkimKey,
    ed25519_key: DkimKey,
    dns_server: LoopbackDns,
) -> None:
    key = rsa_key if algorithm == "rsa" else ed25519_key
    raw = message(subject=subject, text=text, html=f"<p>{text}</p>")
    assert verify(DkimSigner(key).sign(raw), dns_server)


@settings(max_examples=500)
@given(st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"\r", b"\n", b"b c"]), max_size=40))
def test_relaxed_body_canonicalization_is_dkimpys(parts: list[bytes]) -> None:
    body = b"".join(parts)
    assert relaxed_body(body) == CanonicalizationPolicy.from_c_value(b"relaxed/relaxed").canonicalize_body(
        body
    )


@settings(max_examples=1000)
@given(
    st.lists(
        st.sampled_from(
            [b"a", b" ", b"\t", b"  ", b"\r\n", b"\r\n ", b"\r\n\t", b"\n", b"\r", b"\x0b", b"b c"]
        ),
        max_size=12,
    ).map(b"".join),
    st.booleans(),
)
def test_relaxed_header_canonicalization_is_dkimpys(value: bytes, line_end: bool) -> None:
    value += b"\r\n" if line_end else b""
    relaxed = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    assert relaxed_header_value(value) == relaxed.canonicalize_headers([(b"X", value)])[0][1]


def _outcome(parse: Callable[[bytes], object], raw: bytes) -> object:
    try:
        return parse(raw)
    except Exception as exc:  # dkimpy refuses some header lines; the same must be raised
        return type(exc)


@settings(max_examples=500)
@given(
    st.lists(
        st.sampled_from(
            [b"From: a@b.test", b"Subject: x", b" folded", b"\tfolded", b"From nobody", b"bad", b"X:y", b""]
        ),
        max_size=6,
    ),
    st.lists(st.sampled_from([b"a", b" ", b"\r\n", b"\n", b"\r", b"."]), max_size=20).map(b"".join),
    st.booleans(),
)
def test_a_message_is_split_as_dkimpy_splits_it(lines: list[bytes], body: bytes, blank: bool) -> None:
    raw = b"\r\n".join(lines) + (b"\r\n\r\n" if blank else b"") + body
    assert _outcome(split_message, raw) == _outcome(dkim.rfc822_parse, raw)
