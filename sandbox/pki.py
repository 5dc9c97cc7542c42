"""Real X.509 certificates for the simulated world, checked the way Go and curl check them.

Certificates are made with ``cryptography``; ``verify_chain`` follows the order of Go's
``crypto/x509`` ``Certificate.Verify`` (validity, then hostname, then chain) and words its
errors as Go does, while the curl half of the answer follows OpenSSL's own order (chain,
then validity, then curl's host check), so each client fails with its real words.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .http import TLSConfig

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CertKey:
    """A certificate, its private key, and the chain a server presents with it."""

    cert: x509.Certificate
    key: PrivateKey
    cert_pem: bytes
    key_pem: bytes  # unencrypted PKCS8
    chain_pem: bytes  # leaf + issuer(s); a self-signed cert alone
    issuer: CertKey | None = None

    @cached_property
    def chain(self) -> list[x509.Certificate]:
        """The presented chain, parsed once."""
        return load_pems(self.chain_pem)


@dataclass(frozen=True)
class VerifyError:
    """Why a client rejects a server certificate.

    ``go`` lacks the ``tls: failed to verify certificate: `` prefix. ``curl_code`` 0 means
    curl itself would accept the certificate (a Common-Name-only cert that Go refuses).
    """

    go: str
    curl_code: int
    curl: str


# -- making certificates ---------------------------------------------------------------


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _build(
    subject_cn: str,
    key: PrivateKey,
    *,
    issuer: CertKey | None,
    not_before: datetime,
    days: int,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> CertKey:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    sign_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(sign_key.public_key()), critical=False
        )
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    cert = builder.sign(sign_key, hashes.SHA256())
    pem = _pem(cert)
    return CertKey(cert, key, pem, _key_pem(key), pem + (issuer.chain_pem if issuer else b""), issuer)


def _start(not_before: datetime | None) -> datetime:
    # Backdated a minute, as cfssl and friends do, so a check made "now" never sees it as not yet valid.
    return not_before or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


def make_ca(common_name: str, days: int = 3650, *, issuer: CertKey | None = None) -> CertKey:
    """A CA certificate (EC P-256): self-signed, or an intermediate when ``issuer`` is given."""
    usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    return _build(
        common_name,
        _new_key("ec"),
        issuer=issuer,
        not_before=_start(None),
        days=days,
        extensions=[(x509.BasicConstraints(ca=True, path_length=None), True), (usage, True)],
    )


def make_cert(
    common_name: str,
    dns_names: list[str] | tuple[str, ...] = (),
    ip_addresses: list[str] | tuple[str, ...] = (),
    *,
    issuer: CertKey | None = None,
    days: int = 365,
    not_before: datetime | None = None,
    key_type: Literal["ec", "rsa"] = "ec",
) -> CertKey:
    """A server certificate signed by ``issuer``, or self-signed when there is none.

    Self-signed certificates carry CA:TRUE like ``openssl req -x509`` makes them, so the
    guide's proxy certificate can be trusted as its own CA (Kaniko's SSL_CERT_FILE).
    """
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses]
    exts: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=issuer is None, path_length=None), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
    ]
    if issuer is not None:
        exts.append((x509.KeyUsage(True, False, True, False, False, False, False, False, False), True))
    if sans:
        exts.append((x509.SubjectAlternativeName(sans), False))
    return _build(
        common_name,
        _new_key(key_type),
        issuer=issuer,
        not_before=_start(not_before),
        days=days,
        extensions=exts,
    )


def traefik_default_cert() -> CertKey:
    """Traefik's generated fallback: CN ``TRAEFIK DEFAULT CERT``, one random ``*.traefik.default`` SAN."""
    # Traefik uses RSA-2048 here; EC keeps sandbox start-up fast and changes no error text.
    domain = f"{secrets.token_hex(16)}.{secrets.token_hex(16)}.traefik.default"
    usage = x509.KeyUsage(True, False, True, False, False, False, False, False, False)
    return _build(
        "TRAEFIK DEFAULT CERT",
        _new_key("ec"),
        issuer=None,
        not_before=datetime.now(UTC).replace(microsecond=0),
        days=365,
        extensions=[
            (usage, True),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.SubjectAlternativeName([x509.DNSName(domain)]), False),
        ],
    )


def load_pems(blob: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (none when there is none)."""
    if b"-----BEGIN CERTIFICATE-----" not in blob:
        return []
    return x509.load_pem_x509_certificates(blob)


def certkey_from_pem(chain_pem: bytes, key_pem: bytes) -> CertKey:
    """A CertKey from what a kubernetes.io/tls Secret holds (tls.crt bundle, tls.key)."""
    certs = load_pems(chain_pem)
    if not certs:
        raise ValueError("no certificate in PEM data")
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return CertKey(certs[0], key, _pem(certs[0]), _key_pem(key), chain_pem)


# -- inspecting ------------------------------------------------------------------------


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[-1].value) if attrs else ""


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _dns_sans(cert: x509.Certificate) -> list[str]:
    san = _sans(cert)
    return san.get_values_for_type(x509.DNSName) if san else []


def _ip_sans(cert: x509.Certificate) -> list[str]:
    san = _sans(cert)
    return [str(i) for i in san.get_values_for_type(x509.IPAddress)] if san else []


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    """Issuer equals subject and the certificate's own key verifies its signature."""
    return cert.issuer == cert.subject and _signed_by(cert, cert)


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(cert: x509.Certificate | CertKey) -> dict:
    """Evidence about a certificate, as the wizard shows it."""
    if isinstance(cert, CertKey):
        cert = cert.cert
    fp = cert.fingerprint(hashes.SHA256()).hex().upper()
    return {
        "subject_cn": _cn(cert.subject),
        "dns_names": _dns_sans(cert),
        "ip_addresses": _ip_sans(cert),
        "issuer_cn": _cn(cert.issuer),
        "not_before": _rfc3339(cert.not_valid_before_utc),
        "not_after": _rfc3339(cert.not_valid_after_utc),
        "self_signed": is_self_signed(cert),
        "sha256": ":".join(fp[i : i + 2] for i in range(0, len(fp), 2)),
    }


# -- verifying -------------------------------------------------------------------------


def _go_validity(cert: x509.Certificate, now: datetime) -> str | None:
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    prefix = "x509: certificate has expired or is not yet valid: current time"
    if now < nb:
        return f"{prefix} {_rfc3339(now)} is before {_rfc3339(nb)}"
    if now > na:
        return f"{prefix} {_rfc3339(now)} is after {_rfc3339(na)}"
    return None


def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _match_hostname(pattern: str, host: str) -> bool:
    """Go's matchHostnames: a leading ``*`` label matches exactly one label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not pattern or not host:
        return False
    p_labels, h_labels = pattern.split("."), host.split(".")
    if len(p_labels) != len(h_labels):
        return False
    return all(
        (i == 0 and p == "*" and h != "") or p == h
        for i, (p, h) in enumerate(zip(p_labels, h_labels, strict=True))
    )


def _go_hostname(cert: x509.Certificate, host: str) -> str | None:
    ip = _parse_ip(host)
    ips = _ip_sans(cert)
    if ip is not None:
        if any(ipaddress.ip_address(i) == ip for i in ips):
            return None
    elif any(_match_hostname(d, host) for d in _dns_sans(cert)):
        return None
    # Wording of Go's HostnameError.Error().
    if _sans(cert) is None and _match_hostname(_cn(cert.subject), host):
        return "x509: certificate relies on legacy Common Name field, use SANs instead"
    if ip is not None:
        if not ips:
            return f"x509: cannot validate certificate for {host.strip('[]')} because it doesn't contain any IP SANs"
        valid = ", ".join(ips)
    else:
        valid = ", ".join(_dns_sans(cert))
    if not valid:
        return f"x509: certificate is not valid for any names, but wanted to match {host}"
    return f"x509: certificate is valid for {valid}, not {host}"


def _is_ca(cert: x509.Certificate) -> bool:
    """CA:TRUE and, when key usage is given, certSign (a v1 certificate counts as a CA)."""
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = cert.version != x509.Version.v3
    try:
        return is_ca and cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return is_ca


def _go_parent_error(child: x509.Certificate, parent: x509.Certificate, now: datetime) -> str | None:
    """Go's CheckSignatureFrom followed by the candidate's isValid; None when it is a good parent."""
    if not _is_ca(parent):
        return "x509: invalid signature: parent certificate cannot sign this kind of certificate"
    if not _signed_by(child, parent):
        pub = parent.public_key()
        return (
            "crypto/rsa: verification error"
            if isinstance(pub, rsa.RSAPublicKey)
            else "x509: ECDSA verification failure"
        )
    return _go_validity(parent, now)


def _go_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    now: datetime,
) -> str | None:
    hint: list[tuple[str, x509.Certificate]] = []

    def build(cert: x509.Certificate, chain: list[x509.Certificate]) -> bool:
        # Candidates are found by issuer name, as Go's CertPool.findPotentialParents does.
        for pool, is_root in ((roots, True), (intermediates, False)):
            for cand in pool:
                if cand.subject != cert.issuer or cand in chain:
                    continue
                err = _go_parent_error(cert, cand, now)
                if err:
                    hint.append((err, cand))
                    continue
                if is_root or (len(chain) < 10 and build(cand, [*chain, cand])):
                    return True
        return False

    if leaf in roots or build(leaf, [leaf]):
        return None
    msg = "x509: certificate signed by unknown authority"
    if hint:
        err, cand = hint[0]
        name = _cn(cand.subject) or f"serial:{cand.serial_number}"
        msg += (
            f' (possibly because of "{err}" while trying to verify candidate authority certificate "{name}")'
        )
    return msg


def _curl_chain(
    leaf: x509.Certificate, untrusted: list[x509.Certificate], trusted: list[x509.Certificate], now: datetime
) -> str | None:
    """OpenSSL's build_chain (trusted store first, partial chains allowed as curl asks) then times."""
    chain, cur = [leaf], leaf
    while cur not in trusted:
        parent = next((t for t in trusted if t.subject == cur.issuer and _signed_by(cur, t)), None)
        if parent is not None:
            chain.append(parent)
            break
        if is_self_signed(cur):
            return (
                "self-signed certificate"
                if len(chain) == 1
                else "self-signed certificate in certificate chain"
            )
        parent = next(
            (u for u in untrusted if u not in chain and u.subject == cur.issuer and _signed_by(cur, u)), None
        )
        if parent is None or len(chain) > 10:
            return "unable to get local issuer certificate"
        chain.append(parent)
        cur = parent
    if not all(_is_ca(c) for c in chain[1:]):  # check_chain_extensions runs before the time checks
        return "invalid CA certificate"
    for cert in reversed(chain):  # internal_verify walks from the anchor down
        if now < cert.not_valid_before_utc:
            return "certificate is not yet valid"
        if now > cert.not_valid_after_utc:
            return "certificate has expired"
    return None


def _curl_hostname(cert: x509.Certificate, host: str) -> str | None:
    """curl's ossl_verifyhost: SANs of the target's type, else the CN when there are no SANs at all."""
    ip = _parse_ip(host)
    dns, ips = _dns_sans(cert), _ip_sans(cert)
    if ip is not None and any(ipaddress.ip_address(i) == ip for i in ips):
        return None
    if ip is None and any(_match_hostname(d, host) for d in dns):
        return None
    if dns or ips:
        return f"SSL: no alternative certificate subject name matches target host name '{host}'"
    cn = _cn(cert.subject)
    if not cn:
        return "SSL: unable to obtain common name from peer certificate"
    if (cn == host) if ip is not None else _match_hostname(cn, host):
        return None
    return f"SSL: certificate subject name '{cn}' does not match target host name '{host}'"


def verify_chain(
    presented: list[x509.Certificate],
    server_name: str,
    tls: TLSConfig,
    system_roots: list[x509.Certificate],
    now: datetime | None = None,
) -> VerifyError | None:
    """Check a presented chain for ``server_name`` as a Go client would; None when it is accepted."""
    if not tls.verify:
        return None
    if not presented:
        raise ValueError("no certificate presented")
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    trusted = [c for blob in tls.ca_pems for c in load_pems(blob)]
    if tls.system_roots:
        trusted += system_roots
    leaf, rest = presented[0], presented[1:]
    go = _go_validity(leaf, now) or _go_hostname(leaf, server_name) or _go_chain(leaf, rest, trusted, now)
    if go is None:
        return None
    chain_err = _curl_chain(leaf, rest, trusted, now)
    if chain_err:
        return VerifyError(go, 60, f"SSL certificate problem: {chain_err}")
    host_err = _curl_hostname(leaf, server_name)
    return VerifyError(go, 60 if host_err else 0, host_err or "")
