"""The public hosts on one real loopback HTTPS port, reached by a real httpx client."""

from __future__ import annotations

import ssl

import httpcore
import httpx
import pytest

from sandbox import pki
from sandbox.http import HttpRequest, HttpResponse
from sandbox.vnet import Endpoint
from sandbox.worldserver import WorldServer

REGISTRY, REALM = "registry.example.test", "gitea.k3s.example.test"


class LoopbackOnly(httpcore.AsyncNetworkBackend):
    """Dials mapped names at 127.0.0.1 and refuses anything else: no .test name reaches real DNS."""

    def __init__(self, names: set[str]):
        self.names = names
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        if host not in self.names and host != "127.0.0.1":
            raise httpcore.ConnectError(f"{host} is not mapped")
        return await self.inner.connect_tcp("127.0.0.1", port, timeout, local_address, socket_options)

    async def sleep(self, seconds):
        await self.inner.sleep(seconds)


def client(verify: ssl.SSLContext) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(verify=verify)
    # httpx 0.28 has no network_backend argument; the pool is where httpcore takes one.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=verify, network_backend=LoopbackOnly({REGISTRY, REALM})
    )
    return httpx.AsyncClient(transport=transport, timeout=5)


def echo(name: str):
    async def handler(req: HttpRequest) -> HttpResponse:
        if req.method == "HEAD":
            return HttpResponse(200, body=b"", headers=type(req.headers)([("Content-Length", "1234")]))
        return HttpResponse.text(200, f"{name} {req.url} {req.headers.get('Host')} {req.remote_addr}")

    return handler


@pytest.fixture
async def world(tmp_path):
    ca_reg, ca_realm = pki.make_ca("registry-ca"), pki.make_ca("realm-ca")
    certs = {
        REGISTRY: pki.make_cert(REGISTRY, [REGISTRY], issuer=ca_reg),
        REALM: pki.make_cert(REALM, [REALM], issuer=ca_realm),
    }
    eps = {name: Endpoint(name, "https", echo(name), lambda sni, c=cert: c) for name, cert in certs.items()}
    eps[""] = eps[REALM]  # no SNI: Traefik's side answers, as a bare IP would reach it
    server = WorldServer(eps.get)
    port = await server.start()
    (tmp_path / "both.pem").write_bytes(ca_reg.cert_pem + ca_realm.cert_pem)
    (tmp_path / "reg.pem").write_bytes(ca_reg.cert_pem)
    yield server, port, tmp_path, certs
    await server.stop()
    assert server._dir is None


async def test_two_names_one_port_each_with_its_own_certificate(world):
    server, port, tmp, certs = world
    async with client(ssl.create_default_context(cafile=str(tmp / "both.pem"))) as c:
        for name in (REGISTRY, REALM):
            resp = await c.get(f"https://{name}:{port}/v2/token?service=container_registry")
            assert resp.status_code == 200
            assert resp.text == (
                f"{name} https://{name}:{port}/v2/token?service=container_registry {name}:{port} 127.0.0.1"
            )
            peer = (
                resp.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(binary_form=True)
            )
            assert peer == certs[name].cert.public_bytes(pki.serialization.Encoding.DER)
        head = await c.head(f"https://{REGISTRY}:{port}/v2/org/app/manifests/latest")
        assert head.headers["Content-Length"] == "1234"


async def test_each_name_is_checked_against_its_own_ca(world):
    _, port, tmp, _ = world
    async with client(ssl.create_default_context(cafile=str(tmp / "reg.pem"))) as c:
        assert (await c.get(f"https://{REGISTRY}:{port}/v2/")).status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await c.get(f"https://{REALM}:{port}/v2/")


async def test_unknown_name_gets_a_tls_alert_and_no_sni_the_fallback(world):
    server, port, tmp, certs = world
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    async with client(insecure) as c:
        # asyncio drops the connection without flushing the alert, so the client sees only EOF.
        with pytest.raises(httpx.ConnectError):
            await c.get(f"https://{REGISTRY}:{port}/", extensions={"sni_hostname": "nowhere.example.test"})
        resp = await c.get(f"https://127.0.0.1:{port}/v2/")  # an IP URL sends no SNI
        assert resp.text.startswith(REALM)
        peer = resp.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert peer == certs[REALM].cert.public_bytes(pki.serialization.Encoding.DER)
