"""The in-process virtual network: name resolution, connections and TLS between simulated hosts.

Clients call ``Network.fetch`` with what they can resolve (a ``DnsView``) and how they check
certificates (a ``TLSConfig``); failures are raised as ``NetError`` in the words Go's
net/http and curl use, so the wizard diagnoses the sandbox exactly as a real cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cryptography import x509

from . import pki
from .http import HttpRequest, HttpResponse, NetError, TLSConfig
from .pki import CertKey

log = logging.getLogger(__name__)

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass
class Endpoint:
    """Something listening on an (ip, port)."""

    name: str  # e.g. "traefik websecure", used in logs
    scheme: str  # "http" or "https"
    handler: Handler
    # SNI ("" when the client sent none, as for an IP URL) -> certificate; None = handshake failure
    cert_for: Callable[[str], CertKey | None] | None = None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass
class DnsView:
    """What a client at one vantage point can resolve."""

    # exact names -> IP: /etc/hosts, a pod's hostAliases, and the public DNS this vantage point uses
    hosts: dict[str, str] = field(default_factory=dict)
    cluster_dns: Callable[[str], str | None] | None = None  # only inside pods: *.svc.cluster.local etc.
    search: list[str] | tuple[str, ...] = ()  # pod search domains, e.g. "default.svc.cluster.local"
    musl: bool = False  # alpine: failures read "Try again"
    ndots: int = 5  # what kubelet writes into a pod's resolv.conf

    def candidates(self, name: str) -> list[str]:
        """The DNS names a resolver queries for ``name``, in order."""
        if name.endswith("."):
            return [name[:-1]]
        expanded = [f"{name}.{s}" for s in self.search]
        if name.count(".") >= self.ndots:
            # musl never searches such names; glibc tries them as-is first, then searches.
            return [name] if self.musl else [name, *expanded]
        return [*expanded, name]

    def resolve(self, host: str) -> str | None:
        """The IP ``host`` resolves to here, or None."""
        host = host.strip("[]").lower()
        if _is_ip(host):
            return host
        hosts = {k.lower(): v for k, v in self.hosts.items()}
        # nsswitch "files" sees the name only as given; search domains apply to DNS queries.
        if host.rstrip(".") in hosts:
            return hosts[host.rstrip(".")]
        if self.cluster_dns is None:
            return None
        for name in self.candidates(host):
            ip = self.cluster_dns(name)
            if ip:
                return ip
        return None


def dns_error(host: str, musl: bool = False) -> NetError:
    """The failure a client prints when ``host`` does not resolve."""
    reason = "Try again" if musl else "no such host"
    return NetError(
        f"dial tcp: lookup {host}: {reason}",
        kind="dns",
        curl_code=6,
        curl_message=f"Could not resolve host: {host}",
    )


class Network:
    """Endpoints by (ip, port), reached with the client's DNS view and TLS settings."""

    def __init__(self, system_roots: list[CertKey | x509.Certificate] | None = None):
        self.system_roots: list[x509.Certificate] = [
            r.cert if isinstance(r, CertKey) else r for r in system_roots or []
        ]
        self._endpoints: dict[tuple[str, int], Endpoint] = {}
        self.lookup_hook: Callable[[str, int], Endpoint | None] | None = None
        self.down: set[tuple[str, int]] = set()
        self.last_cert: dict[tuple[str, int], CertKey] = {}  # (host, port) -> last certificate presented

    def add(self, ip: str, port: int, endpoint: Endpoint) -> None:
        self._endpoints[(ip, port)] = endpoint

    def remove(self, ip: str, port: int) -> None:
        self._endpoints.pop((ip, port), None)

    def endpoint_at(self, ip: str, port: int) -> Endpoint | None:
        """What listens at (ip, port), static endpoints first, then the lookup hook."""
        if (ip, port) in self.down:
            return None
        ep = self._endpoints.get((ip, port))
        if ep is None and self.lookup_hook is not None:
            ep = self.lookup_hook(ip, port)
        return ep

    def system_roots_pem(self) -> bytes:
        """The simulated OS trust store as a PEM bundle (what /etc/ssl/certs/ca-certificates.crt holds)."""
        return b"".join(pki._pem(c) for c in self.system_roots)

    async def fetch(
        self,
        req: HttpRequest,
        dns: DnsView,
        tls: TLSConfig,
        *,
        resolve: dict[tuple[str, int], str] | None = None,
        timeout: float = 10.0,
        source_ip: str | None = None,
    ) -> HttpResponse:
        """Send ``req`` as a client would; the response carries ``tls_cert`` (the presented CertKey or None)."""
        host, port = req.host, req.port
        ip = {(h.lower(), p): a for (h, p), a in (resolve or {}).items()}.get((host.lower(), port))
        ip = ip or dns.resolve(host)
        if ip is None:
            raise dns_error(host, dns.musl)
        ep = self.endpoint_at(ip, port)
        if ep is None:
            raise NetError(
                f"dial tcp {ip}:{port}: connect: connection refused",
                kind="refused",
                curl_code=7,
                curl_message=f"Failed to connect to {host} port {port} after 0 ms: Couldn't connect to server",
            )
        cert = None
        if req.scheme == "https":
            if ep.scheme != "https":
                raise NetError(
                    "http: server gave HTTP response to HTTPS client",
                    kind="tls",
                    curl_code=35,
                    curl_message="error:0A00010B:SSL routines::wrong version number",
                )
            # Clients send no SNI for an IP literal; the server then picks its default certificate.
            cert = ep.cert_for("" if _is_ip(host) else host.lower()) if ep.cert_for else None
            if cert is None:
                # Go servers (Traefik, Caddy) answer a failed GetCertificate with an internal_error alert.
                raise NetError(
                    "remote error: tls: internal error",
                    kind="tls",
                    curl_code=35,
                    curl_message="error:0A000438:SSL routines::tlsv1 alert internal error",
                )
            self.last_cert[(host, port)] = cert
            err = pki.verify_chain(cert.chain, host, tls, self.system_roots)
            if err is not None:
                exc = NetError(
                    "tls: failed to verify certificate: " + err.go,
                    kind="tls",
                    curl_code=err.curl_code,
                    curl_message=err.curl or None,
                )
                exc.tls_cert = cert
                raise exc
        elif ep.scheme == "https":
            # Go's http.Server reply to plain HTTP on a TLS port (Traefik, Caddy).
            resp = HttpResponse.text(400, "Client sent an HTTP request to an HTTPS server.\n")
            resp.tls_cert = None
            return resp

        sent = HttpRequest(req.method, req.url, req.headers.copy(), req.body)
        if "Host" not in sent.headers:
            sent.headers.set("Host", req.parts.netloc.rpartition("@")[2])
        sent.remote_addr = source_ip or getattr(req, "remote_addr", None) or ""
        try:
            async with asyncio.timeout(timeout):
                resp = await ep.handler(sent)
        except TimeoutError:
            raise NetError(
                "context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                kind="timeout",
                curl_code=28,
                curl_message=f"Operation timed out after {int(timeout * 1000)} milliseconds with 0 bytes received",
            ) from None
        except Exception:
            log.exception("handler of %s failed for %s %s", ep.name, req.method, req.url)
            resp = HttpResponse.text(502, "Bad Gateway")
        resp = dataclasses.replace(resp)
        resp.tls_cert = cert
        return resp


def peer_ip(req: HttpRequest, default: str) -> str:
    """The address the request came from, as the server's socket would see it."""
    return getattr(req, "remote_addr", None) or default
