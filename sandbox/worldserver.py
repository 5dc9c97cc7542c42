"""The public hosts of the simulated world on one real loopback HTTPS port, for the operator's machine."""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from multidict import CIMultiDict

from .http import Headers, HttpRequest
from .pki import CertKey
from .vnet import Endpoint

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 7.6.1) and framing aiohttp sets itself.
_DROP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


class WorldServer:
    """Serves virtual public endpoints on one real 127.0.0.1 port, choosing the certificate by SNI.

    ``routes(name)`` gives the https endpoint a public name leads to (Caddy for the registry
    host, Traefik websecure for the realm host); ``routes("")`` answers clients that send no
    SNI. Every host shares the port, as they all share 443 in the story.
    """

    def __init__(self, routes: Callable[[str], Endpoint | None]):
        self._routes = routes
        self._runner: web.AppRunner | None = None
        self._dir: Path | None = None
        self._contexts: dict[bytes, ssl.SSLContext] = {}
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen (inside the caller's running loop) and return the bound port."""
        self._dir = Path(tempfile.mkdtemp(prefix="ghcr2gitea-world-"))  # mode 0700
        base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        base.sni_callback = self._on_sni
        app = web.Application(client_max_size=1 << 34)  # image layers, not form posts
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=base)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._contexts.clear()

    def _context(self, ck: CertKey) -> ssl.SSLContext:
        """A server context for one certificate, loaded once."""
        fingerprint = hashlib.sha256(ck.chain_pem + ck.key_pem).digest()
        if fingerprint not in self._contexts:
            assert self._dir is not None
            # The key only touches disk encrypted, and only while OpenSSL reads it.
            password = secrets.token_bytes(24)
            cert_file, key_file = self._dir / "chain.pem", self._dir / "key.pem"
            cert_file.write_bytes(ck.chain_pem)
            key_file.write_bytes(
                ck.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.BestAvailableEncryption(password),
                )
            )
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                ctx.load_cert_chain(cert_file, key_file, password=password)
            finally:
                cert_file.unlink()
                key_file.unlink()
            self._contexts[fingerprint] = ctx
        return self._contexts[fingerprint]

    def _on_sni(self, sslobj: ssl.SSLObject, server_name: str | None, _base: ssl.SSLContext) -> int | None:
        name = (server_name or "").lower()
        try:
            ep = self._routes(name)
            ck = ep.cert_for(name) if ep is not None and ep.cert_for is not None else None
            if ck is None:
                # What Go servers send when they have no certificate for the name.
                return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
            sslobj.context = self._context(ck)
            sslobj.world_sni = name  # the name the client dialled picks the endpoint, as its IP would
        except Exception:
            log.exception("TLS setup for SNI %r failed", name)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host_header = request.headers.get("Host", "")
        sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
        # The name dialled (SNI, "" for none) stands for the IP the client reached; Host is a fallback.
        name = getattr(sslobj, "world_sni", None)
        if name is None:
            name = urlsplit(f"//{host_header}").hostname or ""
        ep = self._routes(name)
        if ep is None:
            return web.Response(status=421, text="Misdirected Request\n")
        req = HttpRequest(
            request.method,
            f"https://{host_header}{request.raw_path}",
            Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]),
            await request.read(),
        )
        req.remote_addr = request.remote or ""
        try:
            resp = await ep.handler(req)
        except Exception:
            log.exception("%s failed for %s %s", ep.name, req.method, req.url)
            return web.Response(status=502, text="Bad Gateway")
        headers = CIMultiDict((k, v) for k, v in resp.headers.items if k.lower() not in _DROP)
        out = web.Response(status=resp.status, body=resp.body, headers=headers)
        if request.method == "HEAD" and not resp.body and resp.headers.get("Content-Length"):
            # A registry's HEAD on a manifest announces the size of the body it leaves out.
            out.headers["Content-Length"] = resp.headers.get("Content-Length")
        return out
