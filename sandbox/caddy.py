"""The external Caddy reverse proxy on the router: one certificate and one upstream per site."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from .http import HttpRequest, HttpResponse, NetError
from .pki import CertKey
from .vnet import Endpoint, peer_ip

Upstream = Callable[[HttpRequest], Awaitable[HttpResponse]]


class Caddy:
    """``reverse_proxy`` sites chosen by SNI (certificate) and Host (route)."""

    def __init__(self, sites: dict[str, tuple[CertKey, Upstream]]):
        self.sites = {host.lower(): site for host, site in sites.items()}
        self._endpoint = Endpoint("caddy", "https", self.handle, self.cert_for)

    def cert_for(self, sni: str) -> CertKey | None:
        """The site's certificate; None (a TLS alert) for a name Caddy has no certificate for."""
        site = self.sites.get(sni.lower().rstrip("."))
        return site[0] if site else None

    def endpoint(self) -> Endpoint:
        return self._endpoint

    async def handle(self, req: HttpRequest) -> HttpResponse:
        host_header = req.headers.get("Host") or req.parts.netloc
        site = self.sites.get((urlsplit(f"//{host_header}").hostname or "").rstrip("."))
        if site is None:
            # Real Caddy answers an unrouted Host with an empty 200; a 404 keeps probes honest.
            return HttpResponse(404, body=b"")
        # reverse_proxy keeps the client's Host and, trusting no proxies by default,
        # replaces any incoming X-Forwarded-* with its own view of the client.
        headers = req.headers.copy()
        headers.items = [(k, v) for k, v in headers.items if not k.lower().startswith("x-forwarded-")]
        client = peer_ip(req, "192.168.1.100")
        headers.set("X-Forwarded-For", client)
        headers.set("X-Forwarded-Proto", "https")
        headers.set("X-Forwarded-Host", host_header)
        path_qs = req.path + (f"?{req.query}" if req.query else "")
        upstream_req = HttpRequest(req.method, f"http://{host_header}{path_qs}", headers, req.body)
        upstream_req.remote_addr = client
        try:
            resp = await site[1](upstream_req)
        except (NetError, TimeoutError):
            resp = HttpResponse(502)  # Caddy's bad gateway has no body
        headers = resp.headers.copy()
        headers.set("Server", "Caddy")
        return HttpResponse(resp.status, headers, resp.body)
