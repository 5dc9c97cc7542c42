"""The virtual network, Traefik's Ingress routing and the external Caddy, as clients see them."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import pytest

from sandbox import pki
from sandbox.caddy import Caddy
from sandbox.http import HttpRequest, HttpResponse, NetError, TLSConfig
from sandbox.traefik import Traefik, routers_for
from sandbox.vnet import DnsView, Endpoint, Network

REALM = "gitea.k3s.example.test"
REGISTRY = "registry.example.test"
TRAEFIK_IP, CADDY_IP, PROXY_IP = "10.0.0.201", "10.0.0.1", "10.43.0.50"
INSECURE = TLSConfig(verify=False)
NODE = DnsView(hosts={REALM: TRAEFIK_IP, REGISTRY: CADDY_IP})  # a node: public DNS, no cluster DNS
SEARCH = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]
CLUSTER = {
    "gitea-http.gitea-system.svc.cluster.local": "10.43.0.30",
    "gitea-auth-proxy.default.svc.cluster.local": PROXY_IP,
}


def pod(**kw) -> DnsView:
    hosts = {REALM: TRAEFIK_IP, REGISTRY: CADDY_IP, **kw.pop("aliases", {})}
    return DnsView(hosts=hosts, cluster_dns=CLUSTER.get, search=SEARCH, **kw)


def get(url: str) -> HttpRequest:
    return HttpRequest("GET", url)


def ingress(
    name: str, host: str = REALM, *, annotations=None, tls=None, path="/", path_type="Prefix", **spec
) -> dict:
    rule = {
        "host": host,
        "http": {
            "paths": [
                {
                    "path": path,
                    "pathType": path_type,
                    "backend": {"service": {"name": "gitea-http", "port": {"number": 3000}}},
                }
            ]
        },
    }
    body = {"rules": [rule], **spec}
    if tls is not None:
        body["tls"] = tls
    return {
        "metadata": {"name": name, "namespace": "gitea-system", "annotations": annotations or {}},
        "spec": body,
    }


HTTP_INGRESS = ingress(
    "gitea-k3s-alias", annotations={"traefik.ingress.kubernetes.io/router.entrypoints": "web"}
)
TLS_INGRESS = ingress(  # the guide's Step 4
    "gitea-k3s-alias-tls",
    annotations={
        "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
        "traefik.ingress.kubernetes.io/router.tls": "true",
    },
    tls=[{"hosts": [REALM]}],
)


class World:
    """A Traefik LB on the network with an echoing Gitea behind it."""

    def __init__(self, *ingresses: dict, secrets: dict | None = None):
        self.ingresses = list(ingresses)
        self.secrets = secrets or {}
        self.calls: list[tuple[str, str, int | str, HttpRequest]] = []
        self.traefik = Traefik(lambda: self.ingresses, lambda ns, n: self.secrets.get((ns, n)), self.backend)
        self.net = Network()
        self.net.add(TRAEFIK_IP, 80, self.traefik.endpoint("web"))
        self.net.add(TRAEFIK_IP, 443, self.traefik.endpoint("websecure"))

    async def backend(self, ns: str, svc: str, port: int | str, req: HttpRequest) -> HttpResponse:
        self.calls.append((ns, svc, port, req))
        return HttpResponse.text(200, json.dumps({"token": "t"}), "application/json")


async def test_traefik_default_cert_fails_verification_like_containerd():
    w = World(TLS_INGRESS)
    with pytest.raises(NetError) as e:
        await w.net.fetch(get(f"https://{REALM}/v2/token"), NODE, TLSConfig())
    err = e.value
    assert err.kind == "tls"
    assert re.fullmatch(
        rf"tls: failed to verify certificate: x509: certificate is valid for [0-9a-f]{{32}}\.[0-9a-f]{{32}}"
        rf"\.traefik\.default, not {re.escape(REALM)}",
        str(err),
    )
    assert (err.curl_code, err.curl_message) == (60, "SSL certificate problem: self-signed certificate")
    assert err.tls_cert is w.traefik.default_cert and w.net.last_cert[(REALM, 443)] is w.traefik.default_cert


async def test_websecure_without_tls_ingress_is_404():
    w = World(HTTP_INGRESS)
    resp = await w.net.fetch(get(f"https://{REALM}/v2/token?service=container_registry"), NODE, INSECURE)
    assert (resp.status, resp.body) == (404, b"404 page not found\n")
    assert resp.headers.get("Content-Type") == "text/plain; charset=utf-8" and not w.calls
    assert resp.tls_cert is w.traefik.default_cert
    plain = await w.net.fetch(get(f"http://{REALM}/v2/token"), NODE, INSECURE)
    assert plain.status == 200 and plain.tls_cert is None


@pytest.mark.parametrize("entrypoints", ["web,websecure", None])
async def test_websecure_without_spec_tls_is_served_with_traefiks_default_certificate(entrypoints):
    # The guide's "Things That Don't Work" says Traefik ignores websecure without spec.tls. K3s's chart turns
    # TLS on for the websecure entrypoint itself, so the router IS served on 443, with the default certificate.
    notes = {"traefik.ingress.kubernetes.io/router.entrypoints": entrypoints} if entrypoints else {}
    w = World(ingress("gitea-k3s-alias", annotations=notes))
    resp = await w.net.fetch(get(f"https://{REALM}/v2/token"), NODE, INSECURE)
    assert resp.status == 200 and resp.tls_cert is w.traefik.default_cert
    assert (await w.net.fetch(get(f"http://{REALM}/v2/token"), NODE, INSECURE)).status == 200


async def test_step4_tls_ingress_routes_https_to_gitea():
    w = World(HTTP_INGRESS, TLS_INGRESS)
    resp = await w.net.fetch(
        get(f"https://{REALM}/v2/token?service=container_registry"), NODE, INSECURE, source_ip="192.168.1.21"
    )
    assert resp.status == 200 and json.loads(resp.body) == {"token": "t"}
    ns, svc, port, req = w.calls[-1]
    assert (ns, svc, port) == ("gitea-system", "gitea-http", 3000)
    assert req.url == f"http://{REALM}/v2/token?service=container_registry"
    assert req.headers.get("Host") == REALM
    assert req.headers.get("X-Forwarded-Proto") == "https"
    assert req.headers.get("X-Forwarded-Host") == REALM
    assert req.headers.get("X-Forwarded-For") == "192.168.1.21"
    # The TLS-only router does not answer plain HTTP; the HTTP Ingress does.
    assert [r.name for r in w.traefik.routers("web")] == [
        "gitea-system-gitea-k3s-alias-gitea.k3s.example.test/"
    ]


async def test_router_tls_annotation_alone_is_https_only():
    only = ingress("tls-only", annotations={"traefik.ingress.kubernetes.io/router.tls": "true"})
    w = World(only)
    assert (await w.net.fetch(get(f"https://{REALM}/"), NODE, INSECURE)).status == 200
    assert (await w.net.fetch(get(f"http://{REALM}/"), NODE, INSECURE)).status == 404


async def test_spec_tls_on_web_entrypoint_only_is_not_on_websecure():
    web_only = ingress(
        "web-only",
        annotations={"traefik.ingress.kubernetes.io/router.entrypoints": "web"},
        tls=[{"hosts": [REALM]}],
    )
    w = World(web_only)
    assert (await w.net.fetch(get(f"https://{REALM}/v2/token"), NODE, INSECURE)).status == 404
    assert (await w.net.fetch(get(f"http://{REALM}/v2/token"), NODE, INSECURE)).status == 200


async def test_secret_certificate_is_presented_by_sni():
    ca = pki.make_ca("cluster-issuer")
    cert = pki.make_cert(REALM, [REALM], issuer=ca)
    data = {
        "tls.crt": base64.b64encode(cert.chain_pem).decode(),
        "tls.key": base64.b64encode(cert.key_pem).decode(),
    }
    with_secret = ingress("tls", tls=[{"hosts": [REALM], "secretName": "realm-tls"}])
    w = World(
        with_secret, secrets={("gitea-system", "realm-tls"): {"type": "kubernetes.io/tls", "data": data}}
    )
    trusted = TLSConfig(ca_pems=(ca.cert_pem,))
    resp = await w.net.fetch(get(f"https://{REALM}/v2/token"), NODE, trusted)
    assert resp.status == 200 and resp.tls_cert.cert == cert.cert
    # Other names, and clients that send no SNI, get Traefik's default certificate.
    assert w.traefik.cert_for("other.example.test") is w.traefik.default_cert
    resp = await w.net.fetch(
        get(f"https://{TRAEFIK_IP}/v2/token"),
        NODE,
        INSECURE,
    )
    assert resp.tls_cert is w.traefik.default_cert
    # A missing Secret falls back to the default certificate too.
    w.secrets.clear()
    with pytest.raises(NetError, match="traefik.default"):
        await w.net.fetch(get(f"https://{REALM}/v2/token"), NODE, trusted)


def test_router_rules_and_priority():
    ing = ingress("multi", tls=[{"hosts": [REALM]}])
    ing["spec"]["rules"][0]["http"]["paths"] += [
        {
            "path": "/v2",
            "pathType": "Prefix",
            "backend": {"service": {"name": "registry", "port": {"name": "http"}}},
        },
        {
            "path": "/v2/token",
            "pathType": "Exact",
            "backend": {"service": {"name": "token", "port": {"number": 80}}},
        },
    ]
    routers = {r.service: r for r in routers_for(ing)}
    assert routers["gitea-http"].rule == f"Host(`{REALM}`) && PathPrefix(`/`)"
    assert routers["token"].rule == f"Host(`{REALM}`) && Path(`/v2/token`)"
    assert routers["registry"].port == "http"
    w = World(ing)
    order = [r.service for r in w.traefik.routers("websecure")]
    # Traefik's default priority is the rule's length; ties go by router name.
    assert order == ["registry", "token", "gitea-http"]
    assert [r.priority for r in w.traefik.routers("websecure")] == [len(routers[s].rule) for s in order]
    # PathPrefix is a string prefix in Traefik, not segment-wise.
    assert routers["registry"].matches(REALM, "/v2token") and not routers["token"].matches(
        REALM, "/v2/token/x"
    )
    assert not routers["registry"].matches("other.example.test", "/v2/")


def test_other_ingress_classes_and_bad_annotations_are_ignored():
    assert routers_for(ingress("n", ingressClassName="nginx")) == []
    assert routers_for(ingress("n", annotations={"kubernetes.io/ingress.class": "nginx"})) == []
    assert routers_for(ingress("n", annotations={"traefik.ingress.kubernetes.io/router.tls": "yes"})) == []
    assert len(routers_for(ingress("n", ingressClassName="traefik"))) == 1


async def test_wildcard_host_rule():
    w = World(ingress("wild", host="*.k3s.example.test"))
    assert (await w.net.fetch(get(f"http://{REALM}/"), NODE, INSECURE)).status == 200
    deep = DnsView(hosts={"a.gitea.k3s.example.test": TRAEFIK_IP})
    assert (await w.net.fetch(get("http://a.gitea.k3s.example.test/"), deep, INSECURE)).status == 404


async def test_backend_failures():
    w = World(HTTP_INGRESS)

    async def missing(*_):
        raise LookupError("no endpoints")

    w.traefik._backend = missing
    assert (await w.net.fetch(get(f"http://{REALM}/"), NODE, INSECURE)).status == 404

    async def refused(*_):
        raise NetError("dial tcp 10.42.0.9:3000: connect: connection refused", kind="refused")

    w.traefik._backend = refused
    resp = await w.net.fetch(get(f"http://{REALM}/"), NODE, INSECURE)
    assert (resp.status, resp.body) == (502, b"Bad Gateway")


# -- DNS and connections ---------------------------------------------------------------


async def test_dns_failure_texts_glibc_and_musl():
    net = Network()
    svc = "gitea-http.gitea-system.svc.cluster.local"
    with pytest.raises(NetError) as e:
        await net.fetch(get(f"http://{svc}:3000/v2/"), NODE, INSECURE)
    assert (str(e.value), e.value.kind) == (f"dial tcp: lookup {svc}: no such host", "dns")
    assert (e.value.curl_code, e.value.curl_message) == (6, f"Could not resolve host: {svc}")
    with pytest.raises(NetError, match=f"^dial tcp: lookup {svc}: Try again$"):
        await net.fetch(get(f"http://{svc}:3000/v2/"), DnsView(hosts={}, musl=True), INSECURE)


def test_cluster_dns_only_from_pods():
    assert NODE.resolve("gitea-http.gitea-system.svc.cluster.local") is None
    assert pod().resolve("gitea-http.gitea-system.svc.cluster.local") == "10.43.0.30"
    assert pod().resolve("gitea-http.gitea-system.svc") == "10.43.0.30"  # via the search list
    assert pod().resolve("gitea-auth-proxy") == PROXY_IP
    assert pod().resolve("gitea-http") is None  # another namespace needs its name
    assert pod().resolve("10.43.0.7") == "10.43.0.7"
    assert pod().resolve(REGISTRY) == CADDY_IP


def test_search_order_glibc_and_musl():
    view = pod()
    assert view.candidates("gitea-http")[0] == "gitea-http.default.svc.cluster.local"
    assert view.candidates("a.b.c.d.e.f")[0] == "a.b.c.d.e.f"  # ndots reached: as-is first
    assert pod(musl=True).candidates("a.b.c.d.e.f") == ["a.b.c.d.e.f"]
    assert view.candidates("svc.local.") == ["svc.local"]


async def test_host_aliases_send_the_realm_to_the_auth_proxy():
    # Kaniko's pod: hostAliases map the realm host to the nginx proxy's ClusterIP.
    proxy_cert = pki.make_cert(REALM, [REALM])

    async def nginx(req: HttpRequest) -> HttpResponse:
        return HttpResponse.text(401, "unauthorized", Www_Authenticate='Bearer realm="x"')

    w = World(TLS_INGRESS)
    w.net.add(PROXY_IP, 443, Endpoint("gitea-auth-proxy", "https", nginx, lambda sni: proxy_cert))
    kaniko = pod(aliases={REALM: PROXY_IP})
    with pytest.raises(NetError, match="x509: certificate signed by unknown authority$"):
        await w.net.fetch(get(f"https://{REALM}/v2/"), kaniko, TLSConfig())
    ssl_cert_file = TLSConfig(ca_pems=(proxy_cert.cert_pem,), system_roots=False)
    resp = await w.net.fetch(get(f"https://{REALM}/v2/"), kaniko, ssl_cert_file)
    assert resp.status == 401 and resp.tls_cert is proxy_cert
    # By ClusterIP there is no IP SAN.
    with pytest.raises(NetError, match="doesn't contain any IP SANs$"):
        await w.net.fetch(get(f"https://{PROXY_IP}/v2/"), kaniko, ssl_cert_file)


async def test_resolve_override_like_curl():
    w = World(HTTP_INGRESS)
    nowhere = DnsView(hosts={})
    resp = await w.net.fetch(get(f"http://{REALM}/"), nowhere, INSECURE, resolve={(REALM, 80): TRAEFIK_IP})
    assert resp.status == 200 and w.calls[-1][3].headers.get("Host") == REALM


async def test_connection_refused_and_down():
    w = World(HTTP_INGRESS)
    with pytest.raises(NetError) as e:
        await w.net.fetch(get(f"http://{REALM}:8080/"), NODE, INSECURE)
    assert (str(e.value), e.value.kind) == (
        f"dial tcp {TRAEFIK_IP}:8080: connect: connection refused",
        "refused",
    )
    assert e.value.curl_code == 7
    assert (
        e.value.curl_message
        == f"Failed to connect to {REALM} port 8080 after 0 ms: Couldn't connect to server"
    )
    w.net.down.add((TRAEFIK_IP, 80))
    with pytest.raises(NetError, match="connection refused"):
        await w.net.fetch(get(f"http://{REALM}/"), NODE, INSECURE)
    w.net.down.clear()
    w.net.remove(TRAEFIK_IP, 80)
    with pytest.raises(NetError, match="connection refused"):
        await w.net.fetch(get(f"http://{REALM}/"), NODE, INSECURE)


async def test_lookup_hook_serves_cluster_ips():
    net = Network()

    async def gitea(req: HttpRequest) -> HttpResponse:
        return HttpResponse.text(200, req.headers.get("Host"))

    net.lookup_hook = lambda ip, port: (
        Endpoint("gitea-http", "http", gitea) if (ip, port) == ("10.43.0.30", 3000) else None
    )
    resp = await net.fetch(get("http://gitea-http.gitea-system.svc.cluster.local:3000/v2/"), pod(), INSECURE)
    assert resp.body == b"gitea-http.gitea-system.svc.cluster.local:3000"


async def test_scheme_mismatches():
    w = World(HTTP_INGRESS)
    w.net.add(TRAEFIK_IP, 3000, w.traefik.endpoint("web"))
    with pytest.raises(NetError) as e:
        await w.net.fetch(get(f"https://{REALM}:3000/v2/"), NODE, INSECURE)
    assert str(e.value) == "http: server gave HTTP response to HTTPS client" and e.value.curl_code == 35
    assert "wrong version number" in e.value.curl_message
    resp = await w.net.fetch(get(f"http://{REALM}:443/v2/"), NODE, INSECURE)
    assert (resp.status, resp.body) == (400, b"Client sent an HTTP request to an HTTPS server.\n")


async def test_handler_crash_is_502_and_slow_handler_times_out():
    net = Network()

    async def crash(req):
        raise RuntimeError("boom")

    async def slow(req):
        await asyncio.sleep(5)

    net.add("10.0.0.5", 80, Endpoint("crash", "http", crash))
    net.add("10.0.0.6", 80, Endpoint("slow", "http", slow))
    assert (await net.fetch(get("http://10.0.0.5/"), NODE, INSECURE)).status == 502
    with pytest.raises(NetError) as e:
        await net.fetch(get("http://10.0.0.6/"), NODE, INSECURE, timeout=0.05)
    assert e.value.kind == "timeout" and e.value.curl_code == 28


# -- Caddy -------------------------------------------------------------------------------


@pytest.fixture
def public_pki():
    root = pki.make_ca("Fake Public Root")
    return (
        root,
        pki.make_cert(REGISTRY, [REGISTRY], issuer=root),
        pki.make_cert("git.example.test", ["git.example.test"], issuer=root),
    )


async def test_caddy_routes_by_sni_and_host(public_pki):
    root, reg_cert, git_cert = public_pki
    seen: list[HttpRequest] = []

    def upstream(name):
        async def handler(req: HttpRequest) -> HttpResponse:
            seen.append(req)
            return HttpResponse.text(200, name)

        return handler

    caddy = Caddy(
        {REGISTRY: (reg_cert, upstream("registry")), "git.example.test": (git_cert, upstream("git"))}
    )
    net = Network(system_roots=[root])
    net.add(CADDY_IP, 443, caddy.endpoint())
    view = DnsView(hosts={REGISTRY: CADDY_IP, "git.example.test": CADDY_IP, "unknown.example.test": CADDY_IP})
    # Publicly trusted: the default TLS settings (system roots) accept both sites.
    resp = await net.fetch(get(f"https://{REGISTRY}/v2/"), view, TLSConfig(), source_ip="192.168.1.50")
    assert (resp.body, resp.tls_cert) == (b"registry", reg_cert) and resp.headers.get("Server") == "Caddy"
    resp = await net.fetch(get("https://git.example.test/"), view, TLSConfig())
    assert (resp.body, resp.tls_cert) == (b"git", git_cert)
    up = seen[0]
    assert up.headers.get("Host") == REGISTRY and up.headers.get("X-Forwarded-Proto") == "https"
    assert (
        up.headers.get("X-Forwarded-For") == "192.168.1.50" and up.headers.get("X-Forwarded-Host") == REGISTRY
    )
    # No certificate for the name: the handshake dies with Go's internal_error alert.
    with pytest.raises(NetError) as e:
        await net.fetch(get("https://unknown.example.test/"), view, INSECURE)
    assert str(e.value) == "remote error: tls: internal error" and e.value.curl_code == 35
    # A Host Caddy has no site for (SNI matched another site).
    req = get(f"https://{REGISTRY}/")
    req.headers.set("Host", "other.example.test")
    assert (await net.fetch(req, view, INSECURE)).status == 404


async def test_caddy_upstream_down_is_502(public_pki):
    root, reg_cert, _ = public_pki

    async def down(req):
        raise NetError("dial tcp 10.43.0.30:3000: connect: connection refused", kind="refused")

    net = Network(system_roots=[root])
    net.add(CADDY_IP, 443, Caddy({REGISTRY: (reg_cert, down)}).endpoint())
    assert (await net.fetch(get(f"https://{REGISTRY}/v2/"), NODE, TLSConfig())).status == 502
    assert b"Fake Public Root" not in net.system_roots_pem() and net.system_roots_pem().startswith(
        b"-----BEGIN"
    )
