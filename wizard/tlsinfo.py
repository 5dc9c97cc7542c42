"""What a TLS endpoint presents, and whether a client would accept it — in the words Go clients use.

For every HTTPS host the probe touches: the presented chain (subject, SANs, issuer, not-after,
self-signed), whether it verifies against the system roots, against the plan's CA file, or only
with verification off; and the problems a client would report, worded as Go's crypto/x509 words
them (containerd, skopeo and Kaniko are Go programs), so the diagnosis catalogue recognises the
probe's findings and the clients' errors alike:

- ``x509: certificate is valid for X, not Y`` (name mismatch; Traefik's default cert is one),
- ``x509: cannot validate certificate for 10.0.0.1 because it doesn't contain any IP SANs``,
- ``x509: certificate has expired or is not yet valid: …`` and an early warning when it expires soon,
- ``x509: certificate signed by unknown authority``.

Go checks validity first, then the name, then the chain; the first failing check is what a
client prints, and ``TlsReport.go_error`` follows the same order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from .netclient import HostNotMapped, Mapping, connect_address, is_ip, ssl_context

SOON_DAYS = 30


@dataclass(frozen=True)
class CertInfo:
    """One certificate of a presented chain, as the operator needs to read it."""

    subject: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    self_signed: bool
    is_ca: bool
    sha256: str

    @property
    def names(self) -> tuple[str, ...]:
        return self.dns_names + self.ip_addresses

    def describe(self) -> str:
        names = ", ".join(self.names) or f"CN={self.subject} (no SANs)"
        return (f"{self.subject}: valid for {names}; issued by {self.issuer}"
                f"{' (self-signed)' if self.self_signed else ''}; not after {self.not_after:%Y-%m-%d}")

    def to_dict(self) -> dict:
        return {"subject": self.subject, "sans": list(self.names), "issuer": self.issuer,
                "not_after": self.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), "self_signed": self.self_signed,
                "sha256": self.sha256[:16]}


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def cert_info(cert: x509.Certificate | bytes) -> CertInfo:
    if isinstance(cert, bytes):
        cert = x509.load_der_x509_certificate(cert) if not cert.startswith(b"-----") else \
            x509.load_pem_x509_certificate(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(i) for i in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    from cryptography.hazmat.primitives import hashes
    return CertInfo(_cn(cert.subject), dns, ips, _cn(cert.issuer), cert.not_valid_before_utc, cert.not_valid_after_utc,
                    cert.subject == cert.issuer, is_ca, cert.fingerprint(hashes.SHA256()).hex())


def _match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*.") and "." in host:
        return host.split(".", 1)[1] == pattern[2:]
    return False


def name_error(leaf: CertInfo, host: str) -> str | None:
    """Go's HostnameError for ``host``, or None when the certificate is valid for it."""
    host = host.strip("[]")
    if is_ip(host):
        ip = ipaddress.ip_address(host)
        if any(ipaddress.ip_address(i) == ip for i in leaf.ip_addresses):
            return None
        if not leaf.ip_addresses:
            return f"x509: cannot validate certificate for {host} because it doesn't contain any IP SANs"
        return f"x509: certificate is valid for {', '.join(leaf.ip_addresses)}, not {host}"
    if any(_match(d, host) for d in leaf.dns_names):
        return None
    if not leaf.dns_names and not leaf.ip_addresses and _match(leaf.subject, host):
        return "x509: certificate relies on legacy Common Name field, use SANs instead"
    if not leaf.dns_names:
        return f"x509: certificate is not valid for any names, but wanted to match {host}"
    return f"x509: certificate is valid for {', '.join(leaf.dns_names)}, not {host}"


def validity_error(leaf: CertInfo, now: dt.datetime | None = None) -> str | None:
    now = now or dt.datetime.now(dt.UTC)
    if now > leaf.not_after:
        return (f"x509: certificate has expired or is not yet valid: current time {now:%Y-%m-%dT%H:%M:%SZ} is after "
                f"{leaf.not_after:%Y-%m-%dT%H:%M:%SZ}")
    if now < leaf.not_before:
        return (f"x509: certificate has expired or is not yet valid: current time {now:%Y-%m-%dT%H:%M:%SZ} is before "
                f"{leaf.not_before:%Y-%m-%dT%H:%M:%SZ}")
    return None


UNKNOWN_AUTHORITY = "x509: certificate signed by unknown authority"


@dataclass
class Trust:
    """Did the chain verify against one trust store (chain and dates; the name is checked separately)?"""

    ok: bool | None  # None: not tried (no CA file given)
    reason: str = ""  # OpenSSL's verify message when it did not

    @property
    def chain_ok(self) -> bool:
        """The chain leads to a trusted root (an expired certificate is reported as such, not as untrusted)."""
        return bool(self.ok) or self.reason in ("certificate has expired", "certificate is not yet valid")

    def to_dict(self) -> dict | None:
        return None if self.ok is None else {"ok": self.ok, **({"reason": self.reason} if self.reason else {})}


@dataclass
class TlsReport:
    """One HTTPS endpoint: what it presented and who would accept it."""

    host: str
    port: int
    address: str = ""
    chain: tuple[CertInfo, ...] = ()
    error: str = ""  # no TLS at all (refused, not TLS, handshake alert…)
    system_roots: Trust = field(default_factory=lambda: Trust(None))
    ca_file: Trust = field(default_factory=lambda: Trust(None))
    ms: float = 0.0

    @property
    def leaf(self) -> CertInfo | None:
        return self.chain[0] if self.chain else None

    @property
    def chain_trusted(self) -> bool:
        return self.system_roots.chain_ok or self.ca_file.chain_ok

    def name_error(self) -> str | None:
        return name_error(self.leaf, self.host) if self.leaf else None

    def go_error(self, *, verify: bool = True) -> str | None:
        """What a Go client that trusts the system roots plus the CA file would print; None = accepted."""
        if not verify or self.leaf is None:
            return None
        return validity_error(self.leaf) or self.name_error() or (None if self.chain_trusted else UNKNOWN_AUTHORITY)

    def problem_key(self, *, verify: bool = True) -> str | None:
        """The catalogue entry for ``go_error``."""
        err = self.go_error(verify=verify)
        if err is None:
            return None
        from .diagnose import classify
        d = classify(err)
        return d.key if d else "unknown-authority"

    @property
    def trusted_by(self) -> str:
        """The one-line verdict: which trust makes this endpoint verify."""
        if self.error:
            return f"no TLS: {self.error}"
        bad = self.name_error() or (self.leaf and validity_error(self.leaf))
        if self.system_roots.ok and not bad:
            return "verifies against the system roots"
        if self.ca_file.ok and not bad:
            return "verifies against the given CA file"
        return "verifies only with verification off"

    def warnings(self, now: dt.datetime | None = None) -> list[str]:
        leaf, now = self.leaf, now or dt.datetime.now(dt.UTC)
        out = []
        if leaf and now <= leaf.not_after and leaf.not_after - now < dt.timedelta(days=SOON_DAYS):
            days = (leaf.not_after - now).days
            out.append(f"certificate expires soon: on {leaf.not_after:%Y-%m-%d} (in {days} day{'s' if days != 1 else ''})")
        return out

    def to_dict(self) -> dict:
        d: dict = {"endpoint": f"{self.host}:{self.port}", "address": self.address, "ms": round(self.ms, 1)}
        if self.error:
            d["error"] = self.error
            return d
        d["chain"] = [c.to_dict() for c in self.chain]
        d["verdict"] = self.trusted_by
        d["system_roots"] = self.system_roots.to_dict()
        if self.ca_file.ok is not None:
            d["ca_file"] = self.ca_file.to_dict()
        problems = [p for p in (self.leaf and validity_error(self.leaf), self.name_error()) if p]
        if not self.chain_trusted:
            problems.append(UNKNOWN_AUTHORITY)
        if problems:
            d["problems"] = problems
        if self.warnings():
            d["warnings"] = self.warnings()
        return d

    def describe(self) -> str:
        if self.error:
            return f"{self.host}:{self.port}: {self.error}"
        return f"{self.host}:{self.port}: {self.leaf.describe() if self.leaf else 'no certificate'}; {self.trusted_by}"


def _chain_der(sslobj) -> list[bytes]:
    """The chain the server presented (Python 3.13 has it public; 3.10–3.12 on the private object)."""
    for obj in (sslobj, getattr(sslobj, "_sslobj", None)):
        fn = getattr(obj, "get_unverified_chain", None)
        if fn is None:
            continue
        try:
            certs = fn() or []
        except (ssl.SSLError, ValueError):
            continue
        out = [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in certs]  # type: ignore[attr-defined]
        if out:
            return out
    leaf = sslobj.getpeercert(True)
    return [leaf] if leaf else []


async def _handshake(address: str, port: int, sni: str, ctx: ssl.SSLContext, timeout: float):
    """(chain DER list, None) on success, (None, reason) on failure."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(address, port, ssl=ctx,
                                                      server_hostname=None if is_ip(sni) else sni,
                                                      ssl_handshake_timeout=timeout)
            return _chain_der(writer.get_extra_info("ssl_object")), None
    except ssl.SSLCertVerificationError as e:
        return None, e.verify_message or str(e)
    except ssl.SSLError as e:
        return None, (e.reason or str(e)).replace("_", " ").lower()
    except TimeoutError:
        return None, f"timed out after {timeout:.0f} s"
    except OSError as e:
        return None, e.strerror or str(e)
    finally:
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1)
            except (OSError, TimeoutError, ssl.SSLError):
                pass


async def inspect(host: str, port: int, *, mapping: Mapping | None = None, ca_file: str | None = None,
                  timeout: float = 10.0) -> TlsReport:
    """Handshake with host:port (SNI = host) three ways at once: no verification, system roots, CA file."""
    t0 = time.perf_counter()
    report = TlsReport(host, port)
    try:
        report.address = connect_address(mapping or {}, host, port)
    except HostNotMapped as e:
        report.error = str(e)
        return report
    # the name is judged from the chain (worded as Go words it), so the verifying handshakes skip it
    none = ssl_context(verify=False)
    system = ssl_context(check_hostname=False)
    tries = [_handshake(report.address, port, host, none, timeout), _handshake(report.address, port, host, system, timeout)]
    if ca_file:
        only_ca = ssl_context(ca_file, system_roots=False, check_hostname=False)
        tries.append(_handshake(report.address, port, host, only_ca, timeout))
    results = await asyncio.gather(*tries)
    chain, err = results[0]
    if chain is None:
        report.error = err or "handshake failed"
    else:
        report.chain = tuple(cert_info(der) for der in chain)
        report.system_roots = Trust(results[1][1] is None, results[1][1] or "")
        if ca_file:
            report.ca_file = Trust(results[2][1] is None, results[2][1] or "")
    report.ms = (time.perf_counter() - t0) * 1000
    return report
