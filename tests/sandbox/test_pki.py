"""Certificates and Go/curl-style verification in the sandbox's PKI."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sandbox import pki
from sandbox.http import TLSConfig

HOST = "gitea.k3s.example.test"


@pytest.fixture(scope="module")
def ca() -> pki.CertKey:
    return pki.make_ca("gitea-proxy-ca")


@pytest.fixture(scope="module")
def leaf(ca) -> pki.CertKey:
    return pki.make_cert(HOST, [HOST], issuer=ca)


def trust(*cks: pki.CertKey, system: bool = True) -> TLSConfig:
    return TLSConfig(ca_pems=tuple(c.cert_pem for c in cks), system_roots=system)


def later() -> datetime:
    """A moment safely inside every validity period made by these tests."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)


def test_cert_material(ca, leaf):
    assert leaf.issuer is ca
    assert [c.subject for c in pki.load_pems(leaf.chain_pem)] == [leaf.cert.subject, ca.cert.subject]
    assert leaf.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    d = pki.describe(leaf)
    assert d["subject_cn"] == HOST and d["dns_names"] == [HOST] and d["issuer_cn"] == "gitea-proxy-ca"
    assert d["self_signed"] is False and re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", d["sha256"])
    assert pki.describe(ca)["self_signed"] is True
    rsa_cert = pki.make_cert("x", ["x"], ip_addresses=["10.43.0.5"], key_type="rsa")
    assert isinstance(rsa_cert.key, rsa.RSAPrivateKey)
    assert rsa_cert.chain_pem == rsa_cert.cert_pem and pki.describe(rsa_cert)["ip_addresses"] == ["10.43.0.5"]


def test_load_pems_bundle_and_garbage(ca, leaf):
    assert len(pki.load_pems(ca.cert_pem + b"\n" + leaf.cert_pem)) == 2
    assert pki.load_pems(b"") == [] and pki.load_pems(b"not a pem") == []


def test_certkey_from_pem_roundtrip(leaf):
    ck = pki.certkey_from_pem(leaf.chain_pem, leaf.key_pem)
    assert ck.cert == leaf.cert and len(ck.chain) == 2


def test_traefik_default_cert_looks_like_traefiks():
    d = pki.describe(pki.traefik_default_cert())
    assert d["subject_cn"] == "TRAEFIK DEFAULT CERT" and d["self_signed"]
    assert len(d["dns_names"]) == 1
    assert re.fullmatch(r"[0-9a-f]{32}\.[0-9a-f]{32}\.traefik\.default", d["dns_names"][0])


def test_trusted_through_ca_pems(ca, leaf):
    assert pki.verify_chain(leaf.chain, HOST, trust(ca), []) is None
    # Case and a trailing dot do not matter to Go's matcher.
    assert pki.verify_chain(leaf.chain, HOST.upper() + ".", trust(ca), []) is None


def test_unknown_authority(ca, leaf):
    err = pki.verify_chain(leaf.chain, HOST, TLSConfig(), [])
    assert err.go == "x509: certificate signed by unknown authority"
    # The server sends its CA along; OpenSSL names that, not the leaf.
    assert (err.curl_code, err.curl) == (
        60,
        "SSL certificate problem: self-signed certificate in certificate chain",
    )
    only_leaf = [leaf.cert]
    assert pki.verify_chain(only_leaf, HOST, TLSConfig(), []).curl == (
        "SSL certificate problem: unable to get local issuer certificate"
    )


def test_system_roots_count_only_when_enabled(ca, leaf):
    assert pki.verify_chain(leaf.chain, HOST, TLSConfig(), [ca.cert]) is None
    err = pki.verify_chain(leaf.chain, HOST, TLSConfig(system_roots=False), [ca.cert])
    assert err.go == "x509: certificate signed by unknown authority"


def test_self_signed_leaf_trusted_as_its_own_ca():
    cert = pki.make_cert(HOST, [HOST])  # the guide's `openssl req -x509` proxy certificate
    assert pki.verify_chain(cert.chain, HOST, trust(cert), []) is None
    err = pki.verify_chain(cert.chain, HOST, TLSConfig(), [])
    assert err.go == "x509: certificate signed by unknown authority"
    assert err.curl == "SSL certificate problem: self-signed certificate"


def test_regenerated_ca_gives_gos_hint(leaf):
    err = pki.verify_chain(leaf.chain, HOST, trust(pki.make_ca("gitea-proxy-ca")), [])
    assert err.go == (
        'x509: certificate signed by unknown authority (possibly because of "x509: ECDSA verification failure"'
        ' while trying to verify candidate authority certificate "gitea-proxy-ca")'
    )


def test_intermediate_from_the_presented_chain(ca):
    inter = pki.make_ca("gitea-intermediate", issuer=ca)
    leaf = pki.make_cert(HOST, [HOST], issuer=inter)
    assert len(leaf.chain) == 3
    assert pki.verify_chain(leaf.chain, HOST, trust(ca), []) is None
    # Without the intermediate in what the server presents, the chain cannot be built.
    assert (
        pki.verify_chain(leaf.chain[:1], HOST, trust(ca), []).go
        == "x509: certificate signed by unknown authority"
    )


def test_non_ca_cannot_sign(ca):
    server = pki.make_cert("server.example", ["server.example"], issuer=ca)
    child = pki.make_cert("child.example", ["child.example"], issuer=server)
    err = pki.verify_chain(child.chain, "child.example", trust(ca), [])
    assert "parent certificate cannot sign this kind of certificate" in err.go
    assert err.curl == "SSL certificate problem: invalid CA certificate"


def test_expired_leaf_reports_go_times(ca):
    old = pki.make_cert(HOST, [HOST], issuer=ca, not_before=datetime(2025, 1, 1, tzinfo=UTC), days=365)
    now = later()
    err = pki.verify_chain(old.chain, HOST, trust(ca), [], now=now)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert err.go == (
        f"x509: certificate has expired or is not yet valid: current time {stamp} is after 2026-01-01T00:00:00Z"
    )
    assert (err.curl_code, err.curl) == (60, "SSL certificate problem: certificate has expired")


def test_not_yet_valid(ca):
    future = pki.make_cert(HOST, [HOST], issuer=ca, not_before=later() + timedelta(days=30))
    err = pki.verify_chain(future.chain, HOST, trust(ca), [], now=later())
    assert " is before " in err.go and err.curl == "SSL certificate problem: certificate is not yet valid"


def test_validity_is_checked_before_the_hostname(ca):
    old = pki.make_cert("a.example", ["a.example"], issuer=ca, not_before=datetime(2025, 1, 1, tzinfo=UTC))
    err = pki.verify_chain(old.chain, "c.example", TLSConfig(), [], now=later())
    assert err.go.startswith("x509: certificate has expired")
    # OpenSSL builds the chain first, so curl complains about trust instead.
    assert err.curl == "SSL certificate problem: self-signed certificate in certificate chain"


def test_hostname_mismatch_lists_dns_sans(ca):
    cert = pki.make_cert("a.example", ["a.example", "b.example"], issuer=ca)
    err = pki.verify_chain(cert.chain, "c.example", trust(ca), [])
    assert err.go == "x509: certificate is valid for a.example, b.example, not c.example"
    assert err.curl == "SSL: no alternative certificate subject name matches target host name 'c.example'"


def test_traefik_default_cert_for_realm_host():
    err = pki.verify_chain(pki.traefik_default_cert().chain, HOST, TLSConfig(), [])
    assert re.fullmatch(
        r"x509: certificate is valid for [0-9a-f]{32}\.[0-9a-f]{32}\.traefik\.default, not " + HOST, err.go
    )
    assert err.curl == "SSL certificate problem: self-signed certificate"


def test_ip_addresses(ca, leaf):
    err = pki.verify_chain(leaf.chain, "10.43.0.5", trust(ca), [])
    assert err.go == "x509: cannot validate certificate for 10.43.0.5 because it doesn't contain any IP SANs"
    assert err.curl == "SSL: no alternative certificate subject name matches target host name '10.43.0.5'"
    with_ip = pki.make_cert("proxy", [HOST], ip_addresses=["10.43.0.5"], issuer=ca)
    assert pki.verify_chain(with_ip.chain, "10.43.0.5", trust(ca), []) is None
    assert pki.verify_chain(with_ip.chain, "10.43.0.6", trust(ca), []).go == (
        "x509: certificate is valid for 10.43.0.5, not 10.43.0.6"
    )


def test_wildcard_matches_exactly_one_label(ca):
    cert = pki.make_cert("*.k3s.example.test", ["*.k3s.example.test"], issuer=ca)
    assert pki.verify_chain(cert.chain, HOST, trust(ca), []) is None
    assert pki.verify_chain(cert.chain, "a.b.k3s.example.test", trust(ca), []) is not None
    assert pki.verify_chain(cert.chain, "k3s.example.test", trust(ca), []) is not None


def test_common_name_only(ca):
    cert = pki.make_cert("c.example", issuer=ca)
    err = pki.verify_chain(cert.chain, "c.example", trust(ca), [])
    assert err.go == "x509: certificate relies on legacy Common Name field, use SANs instead"
    assert err.curl_code == 0  # curl still falls back to the CN
    other = pki.verify_chain(cert.chain, "d.example", trust(ca), [])
    assert other.go == "x509: certificate is not valid for any names, but wanted to match d.example"
    assert (
        other.curl == "SSL: certificate subject name 'c.example' does not match target host name 'd.example'"
    )


def test_insecure_skip_verify_accepts_anything():
    old = pki.make_cert("x", not_before=datetime(2020, 1, 1, tzinfo=UTC))
    assert pki.verify_chain(old.chain, "10.0.0.1", TLSConfig(verify=False), []) is None
