"""HTTPS from the operator's machine, with curl-style ``--resolve`` host mapping.

``--resolve HOST:PORT:ADDR`` connects to ADDR while SNI and certificate checks still use
HOST (for clusters whose DNS is not ready, and for the sandbox). Names under ``.test``
are never handed to the system resolver: unmapped, they fail at once.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass

import httpcore
import httpx

from .plan import parse_resolve

RESERVED_TLDS = (".test", ".example", ".invalid", ".localhost")


class HostNotMapped(OSError):
    pass


class MappedBackend(httpcore.SyncBackend):
    def __init__(self, mapping: dict[tuple[str, int], str]):
        self.mapping = mapping

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addr = self.mapping.get((host.lower(), port))
        if addr is None:
            if host.lower().rstrip(".").endswith(RESERVED_TLDS):
                # a test name must never leave the machine through the system resolver
                raise httpcore.ConnectError(f"{host}: no --resolve mapping for {host}:{port} (reserved name, "
                                            "not looked up in DNS)")
            addr = host
        return super().connect_tcp(addr, port, timeout, local_address, socket_options)


def ssl_context(ca_file: str | None = None, verify: bool = True) -> ssl.SSLContext:
    if not verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def client(resolve: tuple[str, ...] | list[str] = (), *, ca_file: str | None = None, verify: bool = True,
           timeout: float = 10.0) -> httpx.Client:
    ctx = ssl_context(ca_file, verify)
    transport = httpx.HTTPTransport(verify=ctx)
    # httpx 0.28 takes no network backend; the connection pool is where httpcore accepts one
    transport._pool = httpcore.ConnectionPool(ssl_context=ctx, network_backend=MappedBackend(parse_resolve(resolve)))
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


@dataclass(frozen=True)
class PeerCert:
    subject_cn: str
    dns_names: tuple[str, ...]
    issuer_cn: str
    not_after: str
    self_signed: bool

    def describe(self) -> str:
        names = ", ".join(self.dns_names) or self.subject_cn
        return f"valid for {names}, issued by {self.issuer_cn}{' (self-signed)' if self.self_signed else ''}, " \
               f"expires {self.not_after}"


def peer_cert(resp: httpx.Response) -> PeerCert | None:
    """The certificate the server presented on this response's connection."""
    stream = resp.extensions.get("network_stream")
    sslobj = stream.get_extra_info("ssl_object") if stream else None
    if sslobj is None:
        return None
    der = sslobj.getpeercert(True)
    if not der:
        return None
    from cryptography import x509
    cert = x509.load_der_x509_certificate(der)
    try:
        sans = tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                     .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = ()

    def cn(name) -> str:
        attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return attrs[0].value if attrs else name.rfc4514_string()
    return PeerCert(cn(cert.subject), sans, cn(cert.issuer), cert.not_valid_after_utc.strftime("%Y-%m-%d"),
                    cert.subject == cert.issuer)


def tls_error_text(err: BaseException) -> str:
    """A short, operator-facing wording of an SSL failure."""
    text = str(err)
    for needle, say in (("CERTIFICATE_VERIFY_FAILED", "certificate verify failed"),
                        ("Hostname mismatch", "certificate name mismatch"),
                        ("self-signed certificate", "self-signed certificate"),
                        ("certificate has expired", "certificate has expired")):
        if needle in text:
            detail = re.sub(r"^[\s()_']+|[\s()_']+$", "", text.split("certificate verify failed:")[-1])
            return f"{say}: {detail}" if detail and detail != text else say
    return text[:200]


def is_tls_error(err: BaseException) -> bool:
    e: BaseException | None = err
    while e is not None:
        if isinstance(e, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(e) or "SSL" in type(e).__name__:
            return True
        e = e.__cause__ or e.__context__
    return False


__all__ = ["client", "peer_cert", "PeerCert", "socket"]
