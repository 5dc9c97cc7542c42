"""The auth-flow probe's pieces: challenges, tokens, the pod verdicts, TLS wording, the catalogue."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wizard import authflow, diagnose, netclient, tlsinfo
from wizard.plan import Plan

REALM = "https://gitea.k3s.bto.bar/v2/token"


# ------------------------------------------------------------------ challenges
def test_parse_challenges_gitea_distribution_and_several_headers():
    gitea = f'Bearer realm="{REALM}",service="container_registry",scope="*"'
    distribution = 'Bearer realm="https://auth.test:5000/v2/token",service="container_registry"'
    both = f'Bearer realm="{REALM}", service="container_registry", scope="repository:a/b:pull,push", Basic realm="Gitea"'
    got = authflow.parse_challenges([gitea, distribution, both, 'Basic realm="old gitea"'])
    assert got == [
        ("Bearer", {"realm": REALM, "service": "container_registry", "scope": "*"}),
        ("Bearer", {"realm": "https://auth.test:5000/v2/token", "service": "container_registry"}),
        ("Bearer", {"realm": REALM, "service": "container_registry", "scope": "repository:a/b:pull,push"}),
        ("Basic", {"realm": "Gitea"}),
        ("Basic", {"realm": "old gitea"}),
    ]


def test_parse_challenges_with_an_error_parameter_and_unquoted_values():
    [(scheme, params)] = authflow.parse_challenges(
        ['Bearer realm="https://r/v2/token",service=registry,error="insufficient_scope"'])
    assert scheme == "Bearer" and params == {"realm": "https://r/v2/token", "service": "registry",
                                             "error": "insufficient_scope"}


# ------------------------------------------------------------------ tokens
def jwt(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'ES256'})}.{enc(claims)}.sig"


@pytest.mark.parametrize("claims,anonymous", [
    ({"UserID": 3, "exp": 1}, False),          # Gitea's packages token
    ({"UserID": -1, "exp": 1}, True),          # Gitea's ghost user
    ({"sub": "registry-user", "access": []}, False),
    ({"sub": "", "access": []}, True),         # distribution-style, anonymous
])
def test_token_identity(claims, anonymous):
    got, _ = authflow.token_identity(authflow.token_claims(jwt(claims)))
    assert got is anonymous


def test_opaque_tokens_say_nothing_about_identity():
    assert authflow.token_claims("not-a-jwt") is None
    assert authflow.token_identity(None) == (None, "")


def test_granted_reads_the_access_claim():
    claims = {"access": [{"type": "repository", "name": "acme/app", "actions": ["pull"]},
                         {"type": "repository", "name": "acme/other", "actions": ["pull", "push"]}]}
    assert authflow.granted(claims, "acme/app") == {"pull"}
    assert authflow.granted({"sub": "x"}, "acme/app") is None


# ------------------------------------------------------------------ host mapping
def test_resolve_mapping_and_reserved_names():
    m = netclient.mapping_of(["registry.test:443:127.0.0.1", "Gitea.Example.Test:8443:10.0.0.5"])
    assert netclient.connect_address(m, "registry.test", 443) == "127.0.0.1"
    assert netclient.connect_address(m, "gitea.example.test", 8443) == "10.0.0.5"
    with pytest.raises(netclient.HostNotMapped, match="not looked up in DNS"):
        netclient.connect_address(m, "registry.test", 444)
    assert netclient.connect_address(m, "registry.example.com", 443) == "registry.example.com"
    assert netclient.connect_address({}, "10.1.2.3", 443) == "10.1.2.3"


def test_an_unmapped_test_name_fails_fast_in_a_walk():
    async def run():
        async with authflow.Probe(timeout=5) as probe:
            return await authflow.walk(probe, "x", registry="nowhere.test", repo="a/b")
    flow = authflow.run_sync(run())
    assert flow.problem == "registry-unreachable" and "no --resolve mapping" in flow.cause
    assert flow.hops[0].ms < 500


# ------------------------------------------------------------------ TLS wording
def cert(names=(), ips=(), *, days=30, cn="x", start_days_ago=1):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).public_key(key.public_key())
         .serial_number(1).not_valid_before(now - dt.timedelta(days=start_days_ago))
         .not_valid_after(now + dt.timedelta(days=days)))
    if names or ips:
        import ipaddress
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names] +
                                                        [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]),
                            critical=False)
    return tlsinfo.cert_info(b.sign(key, hashes.SHA256()))


def test_name_errors_are_worded_as_go_words_them():
    leaf = cert(["abc.def.traefik.default"])
    assert tlsinfo.name_error(leaf, "gitea.k3s.bto.bar") == \
        "x509: certificate is valid for abc.def.traefik.default, not gitea.k3s.bto.bar"
    assert tlsinfo.name_error(cert(["registry.test"]), "127.0.0.1") == \
        "x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"
    assert tlsinfo.name_error(cert(["registry.test"], ["127.0.0.1"]), "127.0.0.1") is None
    assert tlsinfo.name_error(cert(["*.bto.bar"]), "registry.bto.bar") is None
    assert tlsinfo.name_error(cert(cn="registry.test"), "registry.test") == \
        "x509: certificate relies on legacy Common Name field, use SANs instead"


def test_expired_and_soon_expiring_certificates():
    old = cert(["r.test"], days=-1, start_days_ago=10)
    assert tlsinfo.validity_error(old).startswith("x509: certificate has expired or is not yet valid")
    report = tlsinfo.TlsReport("r.test", 443, chain=(cert(["r.test"], days=10),),
                               system_roots=tlsinfo.Trust(True))
    assert report.go_error() is None
    assert report.warnings()[0].startswith("certificate expires soon")
    assert report.to_dict()["warnings"] == report.warnings()
    assert report.trusted_by == "verifies against the system roots"


@pytest.mark.parametrize("leaf,host,trust,key", [
    (dict(names=["a.traefik.default"]), "gitea.test", True, "traefik-default-cert"),
    (dict(names=["wrong.test"]), "auth.test", True, "name-mismatch"),
    (dict(names=["auth.test"]), "127.0.0.1", True, "ip-without-san"),
    (dict(names=["auth.test"], days=-1, start_days_ago=5), "auth.test", True, "cert-expired"),
    (dict(names=["auth.test"]), "auth.test", False, "unknown-authority"),
])
def test_tls_problems_map_to_catalogue_entries(leaf, host, trust, key):
    report = tlsinfo.TlsReport(host, 443, chain=(cert(**leaf),), system_roots=tlsinfo.Trust(trust))
    assert report.problem_key() == key
    assert report.trusted_by == "verifies only with verification off"


# ------------------------------------------------------------------ the pod vantages
PLAN = Plan(root_url="https://gitea.k3s.bto.bar/", registry_host="registry.bto.bar", org="jaybrto")


def test_kaniko_script_hits_the_internal_service_and_the_realm_through_the_proxy():
    script = authflow.kaniko_script(PLAN)
    assert "http://gitea-http.gitea-system.svc.cluster.local:3000/v2/" in script
    assert "https://gitea.k3s.bto.bar/v2/token?" in script
    assert "-u" not in script.split()  # no credentials in a pod spec


CHALLENGE = f'v2 401 Bearer realm="{REALM}",service="container_registry",scope="*"'


@pytest.mark.parametrize("log,key", [
    (f"{CHALLENGE}\ntoken 200\ntoken-json yes\n", ""),
    ('v2 401 Bearer realm="https://gitea.bto.bar/v2/token",service="container_registry"\n', "realm-host-mismatch"),
    ('v2 401 Bearer realm="http://gitea.k3s.bto.bar/v2/token"\n', "realm-plain-http"),
    (f"{CHALLENGE}\ntoken 000\ntoken-json no\ncurl: (60) SSL certificate problem: self-signed certificate\n",
     "kaniko-flags"),
    (f"{CHALLENGE}\ntoken 000\ntoken-json no\ncurl: (60) SSL certificate problem: certificate has expired\n",
     "cert-expired"),
    (f"{CHALLENGE}\ntoken 000\ntoken-json no\ncurl: (60) SSL: no alternative certificate subject name matches "
     "target host name 'gitea.k3s.bto.bar'\n", "name-mismatch"),
    (f"{CHALLENGE}\ntoken 000\ntoken-json no\ncurl: (7) Failed to connect to gitea.k3s.bto.bar port 443\n",
     "kaniko-host-alias"),
    (f"{CHALLENGE}\ntoken 502\ntoken-json no\n", "nginx-resolver"),
])
def test_judge_kaniko(log, key):
    assert authflow.judge_kaniko(log, PLAN).problem == key


# Gitea 1.26+ (PUBLIC_URL_DETECTION=auto) names the host the client asked: the internal service, over HTTP
INTERNAL = "http://gitea-http.gitea-system.svc.cluster.local:3000"


def test_judge_kaniko_accepts_a_realm_derived_from_the_internal_service():
    log = f'v2 401 Bearer realm="{INTERNAL}/v2/token",service="container_registry",scope="*"\ntoken 200\n' \
          "token-json yes\n"
    assert authflow.judge_kaniko(log, PLAN).ok


@pytest.mark.parametrize("realm,asked,key", [
    # Gitea <= 1.22.0, or later without X-Forwarded-Proto before 1.26: ROOT_URL
    ("https://gitea.k3s.bto.bar/v2/token", "https://registry.bto.bar", None),
    # Gitea >= 1.22.1 behind a proxy that sends X-Forwarded-Proto: https, and 1.26+ always: the asked host
    ("https://registry.bto.bar/v2/token", "https://registry.bto.bar", None),
    ("https://registry.bto.bar:443/v2/token", "https://registry.bto.bar", None),
    # the same, but Traefik's web entrypoint rewrote X-Forwarded-Proto to http: credentials in clear
    ("http://registry.bto.bar/v2/token", "https://registry.bto.bar", "realm-plain-http"),
    ("http://gitea.k3s.bto.bar/v2/token", "https://registry.bto.bar", "realm-plain-http"),
    ("https://gitea.bto.bar/v2/token", "https://registry.bto.bar", "realm-host-mismatch"),
    ("https://registry.bto.bar:8443/v2/token", "https://registry.bto.bar", "realm-host-mismatch"),
])
def test_a_realm_is_usable_when_it_is_root_url_or_the_asked_host_by_gitea_version(realm, asked, key):
    got = authflow.realm_problem(realm, asked, PLAN.realm)
    assert (got[0] if got else None) == key, got
    if key == "realm-plain-http" and "registry.bto.bar" in realm:
        assert "X-Forwarded-Proto: http" in got[1]


def test_judge_kaniko_names_socat():
    log = f"{CHALLENGE}\ntoken 000\ntoken-json no\ncurl: (7) Failed to connect to gitea.k3s.bto.bar port 443\n"
    assert authflow.judge_kaniko(log, PLAN, proxy_image="alpine/socat").problem == "socat-proxy"


# containerd's own words, as a real containerd printed them (test-environment.md) and the guide quotes them
A, B = "registry.bto.bar", "gitea.k3s.bto.bar"
FATA = 'FATA[0000] pulling image: rpc error: code = Unknown desc = failed to pull and unpack image "x": '


@pytest.mark.parametrize("tail,key", [
    (f'failed to authorize: failed to fetch oauth token: Post "https://{B}/v2/token": tls: failed to verify '
     f"certificate: x509: certificate is valid for 1.2.traefik.default, not {B}", "traefik-default-cert"),
    (f'failed to authorize: failed to fetch oauth token: Post "https://{B}/v2/token": x509: certificate signed by '
     "unknown authority", "unknown-authority"),
    (f'failed to do request: Head "https://{A}/v2/o/r/manifests/latest": x509: certificate signed by unknown '
     "authority", "unknown-authority"),
    ("failed to authorize: failed to fetch oauth token: unexpected status: 401 Unauthorized", "wrong-token"),
    ("failed to authorize: failed to fetch anonymous token: unexpected status: 401 Unauthorized", "wrong-token"),
    (f"failed to authorize: failed to fetch oauth token: unexpected status from GET request to https://{B}/v2/token"
     "?scope=repository%3Ao%2Fr%3Apull&service=container_registry: 401 Unauthorized", "wrong-token"),
    # containerd 1.6 names no URL for the missing token route (a real 1.6 pull, tests/real/test_containerd_real.py)
    ("failed to authorize: failed to fetch oauth token: unexpected status: 404 Not Found", "token-endpoint-404"),
    (f"failed to authorize: failed to fetch oauth token: unexpected status from GET request to https://{B}/v2/token"
     "?scope=repository%3Ao%2Fr%3Apull&service=container_registry: 404 Not Found", "token-endpoint-404"),
    ('failed to do request: Head "http://gitea-http.gitea-system.svc.cluster.local:3000/v2/o/r/manifests/latest": '
     "dial tcp: lookup gitea-http.gitea-system.svc.cluster.local: no such host", "cluster-dns-on-node"),
    (f'failed to authorize: failed to fetch oauth token: Post "https://{B}/v2/token": dial tcp 10.0.0.201:443: '
     "connect: connection refused", "realm-unreachable-from-node"),
    ("pull access denied, repository does not exist or may require authorization: server message: "
     "insufficient_scope: authorization failed", "pull-denied"),
])
def test_judge_pull_with_containerds_words(tail, key):
    v = authflow.judge_pull(f"E1126 remote_image.go:180] ...\n{FATA}{tail}\n", 1)
    assert v.problem == key, v.cause


def test_judge_pull_success():
    assert authflow.judge_pull("Image is up to date for sha256:abc\n", 0).ok


# ------------------------------------------------------------------ the catalogue
def test_catalogue_covers_the_guide_and_the_issue():
    keys = set(diagnose.BY_KEY)
    assert {"traefik-default-cert", "token-endpoint-404", "push-401", "cluster-dns-on-node", "nginx-upstream",
            "not-restarted", "kaniko-flags", "websecure-without-tls", "realm-unreachable-from-node", "wrong-token",
            "anonymous-token", "socat-proxy", "kaniko-host-alias", "nginx-resolver", "realm-host-mismatch",
            "realm-plain-http", "pull-only-token", "name-mismatch", "cert-expired", "ip-without-san",
            "unknown-authority"} <= keys
    assert len(keys) == len(diagnose.CATALOGUE)
    for d in diagnose.CATALOGUE:
        assert d.cause and d.fix and "\n" not in d.cause + d.fix, d.key
        assert d.pattern or d.detected_by, f"{d.key}: neither a pattern nor a stage check detects it"


def test_rendered_troubleshooting_names_every_entry():
    text = diagnose.render_markdown()
    for d in diagnose.CATALOGUE:
        assert f"## {d.title}" in text and f"`{d.key}`" in text
