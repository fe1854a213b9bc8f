"""The network side: listening ports, the inbound listener as the world reaches it, and the time.

Ports: each configured listener (API, relay, inbound listener, metrics) is either served by this
deployment (it answers as Estafeta does: `GET /healthz`, or an SMTP greeting naming Estafeta), or free
to bind while `estafeta serve` is not running (a warning: start it). Anything else answering there, or a
port this user may not bind, fails. A port set to 0 is picked at start and is not checked.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
import dns.asyncresolver
import dns.exception
import dns.resolver
import httpx
import ntplib

from estafeta.config import Settings
from estafeta.delivery.mx import MxResolver
from estafeta.doctor.check import Check

OURS = "Estafeta ESMTP"  # in the greeting of the relay and of the inbound listener


@dataclass(frozen=True)
class Listener:
    name: str
    group: str  # the settings group, whose `host` it binds (for the fix)
    port_setting: str
    host: str
    port: int
    kind: Literal["http", "metrics", "smtp", "smtps"]


def listeners(settings: Settings) -> list[Listener]:
    """What `estafeta serve` binds with these settings."""
    api, smtp, inbound, metrics = settings.api, settings.smtp, settings.inbound, settings.metrics
    found = [Listener("API", "api", "api.port", api.host, api.port, "http")]
    if smtp.enabled:
        found.append(
            Listener("relay (STARTTLS)", "smtp", "smtp.starttls_port", smtp.host, smtp.starttls_port, "smtp")
        )
        found.append(
            Listener(
                "relay (TLS)", "smtp", "smtp.implicit_tls_port", smtp.host, smtp.implicit_tls_port, "smtps"
            )
        )
    if inbound.enabled:
        found.append(
            Listener("inbound listener", "inbound", "inbound.port", inbound.host, inbound.port, "smtp")
        )
    if metrics.enabled and metrics.port is not None:
        found.append(Listener("metrics", "metrics", "metrics.port", metrics.host, metrics.port, "metrics"))
    return found


def _connectable(host: str) -> str:
    """Where to reach a listener bound to `host` (the wildcard addresses are reached on loopback)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


async def _identify(listener: Listener, host: str, timeout: float) -> str | None:
    """What answers there, when it is this deployment's listener; None when it is something else."""
    if listener.kind in ("http", "metrics"):
        netloc = f"[{host}]" if ":" in host else host
        path = "/healthz" if listener.kind == "http" else "/metrics"
        async with httpx.AsyncClient(timeout=timeout) as client:
            try:
                response = await client.get(f"http://{netloc}:{listener.port}{path}")
            except httpx.HTTPError:
                return None
        if listener.kind == "http":
            try:
                body = response.json()
            except ValueError:  # not JSON: another program
                body = None
            answered = (
                response.status_code == 200 and isinstance(body, dict) and body.get("service") == "estafeta"
            )
        else:
            answered = response.status_code == 200 and "estafeta_" in response.text
        return f"Estafeta answers GET {path}" if answered else None
    context = None
    if listener.kind == "smtps":  # only to read the greeting: trust is the certificate check's business
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, listener.port, ssl=context), timeout
        )
        try:
            greeting = (await asyncio.wait_for(reader.readline(), timeout)).decode("utf-8", "replace").strip()
        finally:
            writer.close()
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    return f"Estafeta answers: {greeting}" if OURS in greeting else None


def _bind_problem(host: str, port: int) -> OSError | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


async def _port(listener: Listener, timeout: float) -> Check:
    target = f"{listener.host}:{listener.port}"
    check = f"port: {listener.name}"
    if listener.port == 0:
        return Check(check, target, "pass", "port 0: a free port is picked at start")
    host = _connectable(listener.host)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, listener.port), timeout)
        writer.close()
    except ConnectionRefusedError:
        problem = _bind_problem(listener.host, listener.port)
        if problem is None:
            return Check(
                check, target, "warn", "nothing listens; the port is free to bind", "start `estafeta serve`"
            )
        if problem.errno == errno.EACCES:
            return Check(
                check,
                target,
                "fail",
                f"nothing listens, and this user may not bind port {listener.port} (below 1024)",
                "give the service CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE), "
                f"or set {listener.port_setting} above 1023 and forward port {listener.port} to it",
            )
        if problem.errno == errno.EADDRNOTAVAIL:
            return Check(
                check,
                target,
                "fail",
                f"{listener.host} is not an address of this machine",
                f"set {listener.group}.host to an address of this machine",
            )
        return Check(
            check,
            target,
            "fail",
            f"nothing listens, and binding fails: {problem.strerror}",
            f"free the port, or set {listener.port_setting} to another",
        )
    except (OSError, TimeoutError) as exc:
        return Check(
            check,
            target,
            "fail",
            f"cannot connect: {exc or 'timed out'}",
            f"set {listener.group}.host to an address of this machine",
        )
    answer = await _identify(listener, host, timeout)
    if answer is None:
        return Check(
            check,
            target,
            "fail",
            "another program listens there (it does not answer as Estafeta)",
            f"stop the program that holds {target} (`ss -ltnp 'sport = :{listener.port}'` names it), or "
            f"set {listener.port_setting} to a free port",
        )
    return Check(check, target, "pass", answer)


async def check_ports(settings: Settings) -> list[Check]:
    timeout = settings.doctor.timeout
    return list(await asyncio.gather(*(_port(listener, timeout) for listener in listeners(settings))))


async def _greet(settings: Settings, mx: str, address: str) -> Check:
    port = settings.delivery.smtp_port
    target = f"{mx} ({address}) port {port}"
    client = aiosmtplib.SMTP(
        hostname=address,
        port=port,
        local_hostname=settings.hostname,
        timeout=settings.doctor.timeout,
        start_tls=False,
    )
    try:
        greeting = await client.connect()
        reply = await client.ehlo()
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return Check(
            "inbound via MX",
            target,
            "fail",
            f"no SMTP service reached: {exc or 'timed out'}",
            f"run `estafeta serve` with inbound.enabled on this machine, and let port {port} through the "
            "firewall (or forward it to inbound.port)",
        )
    finally:
        if client.is_connected:
            client.close()
    detail = f"{greeting.code} {greeting.message}; EHLO {reply.code}"
    if OURS not in greeting.message:
        return Check(
            "inbound via MX",
            target,
            "warn",
            f"answers, but not as Estafeta's inbound listener ({detail})",
            f"point the MX of {settings.return_path_domain} at the machine running the inbound listener, "
            "unless that server forwards its mail there",
        )
    return Check("inbound via MX", target, "pass", detail)


async def check_inbound_mx(settings: Settings, resolver: dns.asyncresolver.Resolver) -> list[Check]:
    """Bounces, complaints and DMARC reports reach the inbound listener as other servers send them: through
    the return-path domain's MX, on the port MX servers listen on (`delivery.smtp_port`, 25)."""
    domain = settings.return_path_domain
    publish = f"publish `{domain} MX 10 {settings.hostname}` and `{settings.hostname} A <public address>`"
    if not settings.inbound.enabled:
        return [
            Check(
                "inbound via MX",
                domain,
                "warn",
                f"inbound.enabled is false: bounces, complaints and DMARC reports mailed to {domain} are "
                "not received",
                f"set inbound.enabled = true and {publish}",
            )
        ]
    try:
        answer = await resolver.resolve(domain, "MX")
        records = sorted((r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [Check("inbound via MX", domain, "fail", f"{domain} has no MX record", publish)]
    except dns.exception.DNSException as exc:
        return [Check("inbound via MX", domain, "fail", f"MX lookup failed: {exc}", "check dns_servers")]
    rows: list[Check] = []
    for _, mx in records:
        if mx in ("", "."):
            rows.append(Check("inbound via MX", domain, "fail", "null MX: the domain takes no mail", publish))
            continue
        try:
            addresses = await MxResolver(resolver).addresses(mx)
        except dns.exception.DNSException as exc:
            rows.append(
                Check("inbound via MX", mx, "fail", f"address lookup failed: {exc}", "check dns_servers")
            )
            continue
        if not addresses:
            rows.append(
                Check(
                    "inbound via MX",
                    mx,
                    "fail",
                    f"MX host {mx} has no address (A/AAAA record)",
                    f"publish `{mx} A <public address of the machine running the inbound listener>`",
                )
            )
        rows.extend([await _greet(settings, mx, address) for address in addresses])
    return rows


UNSYNCHRONISED = 3  # the leap indicator of a server whose own clock is not set (RFC 5905)


def _ntp_offset(server: str, timeout: float) -> float:
    """Seconds the server's clock is ahead of this one (blocking)."""
    host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
    response = ntplib.NTPClient().request(
        host or server, version=3, port=int(port) if port else 123, timeout=timeout
    )
    if response.leap == UNSYNCHRONISED or response.stratum == 0:
        raise ntplib.NTPException(f"{server} says its own clock is not synchronised")
    return float(response.offset)


async def check_ntp(settings: Settings) -> list[Check]:
    """This machine's clock against an NTP server: DKIM signatures, Date headers and retry times carry it."""
    doctor = settings.doctor
    if not doctor.ntp_server:
        return [
            Check(
                "clock: NTP",
                "doctor.ntp_server",
                "warn",
                "not set: this machine's clock is not compared",
                "set doctor.ntp_server, e.g. to pool.ntp.org or your network's time server",
            )
        ]
    try:
        offset = await asyncio.to_thread(_ntp_offset, doctor.ntp_server, doctor.timeout)
    except (ntplib.NTPException, OSError, ValueError) as exc:
        return [
            Check(
                "clock: NTP",
                doctor.ntp_server,
                "fail",
                f"no answer: {exc}",
                "check doctor.ntp_server, and that UDP port 123 to it is open",
            )
        ]
    detail = (
        f"this machine's clock is {abs(offset):.3f} s {'behind' if offset > 0 else 'ahead of'} the server's"
    )
    if abs(offset) <= doctor.max_clock_skew:
        return [Check("clock: NTP", doctor.ntp_server, "pass", detail)]
    return [
        Check(
            "clock: NTP",
            doctor.ntp_server,
            "fail",
            f"{detail} (more than {doctor.max_clock_skew:g} s)",
            "synchronise this machine's clock with NTP (chrony or systemd-timesyncd)",
        )
    ]
