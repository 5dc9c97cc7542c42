"""The auth proxy's self-signed certificate (Step 3), made in memory with ``cryptography``.

The private key never touches the disk unencrypted: it goes straight into the TLS Secret.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class ProxyCert:
    cert_pem: bytes
    key_pem: bytes  # held in memory only

    def __repr__(self) -> str:
        return "ProxyCert(cert, key=****)"


def make_proxy_cert(hostname: str, days: int, *, start: dt.datetime | None = None) -> ProxyCert:
    """RSA 2048, CN and SAN = the realm host (as the guide's openssl command), valid ``days`` from ``start``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    begin = start or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(begin).not_valid_after(begin + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return ProxyCert(cert.public_bytes(serialization.Encoding.PEM),
                     key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


@dataclass(frozen=True)
class CertFacts:
    dns_names: tuple[str, ...]
    not_after: dt.datetime
    self_signed: bool

    def problem(self, hostname: str, now: dt.datetime | None = None) -> str | None:
        now = now or dt.datetime.now(dt.UTC)
        if hostname not in self.dns_names:
            return f"certificate is valid for {', '.join(self.dns_names) or 'no names'}, not {hostname}"
        if self.not_after <= now:
            return f"certificate expired on {self.not_after:%Y-%m-%d}"
        if self.not_after - now < dt.timedelta(days=RENEW_BEFORE_DAYS):
            return f"certificate expires soon ({self.not_after:%Y-%m-%d})"
        return None


def cert_facts(pem: bytes) -> CertFacts | None:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    try:
        names = tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                      .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertFacts(names, cert.not_valid_after_utc, cert.subject == cert.issuer)
