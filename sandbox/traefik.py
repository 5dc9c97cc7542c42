"""K3s's bundled Traefik v2 as the Ingress controller: routers from Ingress objects, certificates by SNI.

K3s's Traefik chart sets ``ports.websecure.tls.enabled: true`` (``--entrypoints.websecure.http.tls``):
every router on ``websecure`` gets TLS, so an Ingress on ``web,websecure`` or with no entrypoints
annotation IS served on 443 — with Traefik's own ``TRAEFIK DEFAULT CERT`` when no ``spec.tls`` secret
names the host (the guide's "Traefik ignores websecure without spec.tls" is not what happens). Only an
Ingress on ``entrypoints: web`` alone (the guide's HTTP Ingress) leaves the realm without HTTPS, so the
token endpoint 404s over HTTPS until the separate TLS Ingress of Step 4 exists.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import pki
from .http import HttpRequest, HttpResponse, NetError
from .pki import CertKey
from .vnet import Endpoint, peer_ip

ANNOTATION = "traefik.ingress.kubernetes.io/router."
Backend = Callable[[str, str, int | str, HttpRequest], Awaitable[HttpResponse]]
_FORWARDING_HEADERS = ("X-Forwarded-", "X-Real-Ip")


def _go_bool(value: str) -> bool:
    """Go's strconv.ParseBool, which Traefik's annotation parser uses."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"invalid boolean {value!r}")


@dataclass(frozen=True)
class Router:
    """One router Traefik builds from one path of one Ingress rule."""

    name: str
    namespace: str
    rule: str  # Traefik's rule text, e.g. Host(`h`) && PathPrefix(`/`); its length is the default priority
    host: str
    path: str
    exact: bool
    service: str
    port: int | str
    entrypoints: tuple[str, ...]  # empty = every entrypoint
    tls: bool  # spec.tls present or router.tls annotation: its own certificates (else the default one)
    tls_only: bool  # router.tls annotation: not served on web
    priority: int

    def serves(self, entrypoint: str) -> bool:
        if self.entrypoints and entrypoint not in self.entrypoints:
            return False
        # websecure has TLS on the entrypoint itself (K3s's chart): every router attached to it is served
        return entrypoint == "websecure" or not self.tls_only

    def matches(self, host: str, path: str) -> bool:
        if self.host:
            if self.host.startswith("*."):
                # buildHostRule turns a wildcard into a HostRegexp for exactly one label.
                if not re.fullmatch(r"[a-z0-9-]+" + re.escape(self.host[1:]), host):
                    return False
            elif host != self.host:
                return False
        if not self.path:
            return True
        # PathPrefix is a plain string prefix in Traefik, not k8s's segment-wise Prefix.
        return path == self.path if self.exact else path.startswith(self.path)


def _router_config(ingress: dict) -> tuple[tuple[str, ...], bool, int] | None:
    """(entrypoints, router.tls, priority), or None when Traefik skips the Ingress entirely."""
    spec, notes = ingress.get("spec") or {}, (ingress.get("metadata") or {}).get("annotations") or {}
    # K3s's Traefik handles its own IngressClass and class-less Ingresses, nothing else.
    if (spec.get("ingressClassName") or notes.get("kubernetes.io/ingress.class", "traefik")) != "traefik":
        return None
    try:
        tls_only = _go_bool(notes.get(ANNOTATION + "tls", "false"))
        priority = int(notes.get(ANNOTATION + "priority", "0"))
    except ValueError:
        return None  # "Failed to parse annotations": the whole Ingress is skipped
    eps = tuple(e.strip() for e in notes.get(ANNOTATION + "entrypoints", "").split(",") if e.strip())
    return eps, tls_only, priority


def routers_for(ingress: dict) -> list[Router]:
    """The routers Traefik's Kubernetes Ingress provider derives from one Ingress."""
    config = _router_config(ingress)
    if config is None:
        return []
    eps, tls_only, priority = config
    meta, spec = ingress.get("metadata") or {}, ingress.get("spec") or {}
    tls = tls_only or bool(spec.get("tls"))
    ns, name = meta.get("namespace", "default"), meta.get("name", "")

    def make(host: str, path: str, path_type: str, backend: dict, prio: int | None = None) -> Router | None:
        svc = backend.get("service") or {}
        port = (svc.get("port") or {}).get("number") or (svc.get("port") or {}).get("name")
        if not svc.get("name") or port is None:
            return None
        exact = path_type == "Exact"
        parts = [f"Host(`{host}`)"] if host else []
        if path:
            parts.append(f"{'Path' if exact else 'PathPrefix'}(`{path}`)")
        rule = " && ".join(parts)
        return Router(
            name=f"{ns}-{name}-{host}{path}".strip("-"),
            namespace=ns,
            rule=rule,
            host=host.lower(),
            path=path,
            exact=exact,
            service=svc["name"],
            port=port,
            entrypoints=eps,
            tls=tls,
            tls_only=tls_only,
            priority=prio if prio is not None else priority or len(rule),
        )

    out: list[Router | None] = []
    rules = spec.get("rules") or []
    if not rules and spec.get("defaultBackend"):
        out.append(make("", "/", "Prefix", spec["defaultBackend"], prio=-(2**31)))
    for r in rules:
        for p in (r.get("http") or {}).get("paths") or []:
            out.append(
                make(r.get("host", ""), p.get("path", ""), p.get("pathType", ""), p.get("backend") or {})
            )
    return [r for r in out if r is not None]


def _cert_names(ck: CertKey) -> list[str]:
    """Names Traefik's certificate store indexes a certificate under: DNS SANs, the CN, IP SANs."""
    d = pki.describe(ck.cert)
    names = [n.lower() for n in d["dns_names"]]
    if d["subject_cn"] and d["subject_cn"].lower() not in names:
        names.append(d["subject_cn"].lower())
    return names + d["ip_addresses"]


class Traefik:
    """Routes requests on the ``web`` and ``websecure`` entrypoints to Services, per the Ingresses."""

    def __init__(
        self,
        ingresses: Callable[[], Iterable[dict]],
        secret: Callable[[str, str], dict | None],
        backend: Backend,
        default_cert: CertKey | None = None,
    ):
        self._ingresses = ingresses
        self._secret = secret
        self._backend = backend
        self.default_cert = default_cert or pki.traefik_default_cert()
        self._parsed: dict[tuple[str, str], CertKey | None] = {}
        self._endpoints: dict[str, Endpoint] = {}

    def routers(self, entrypoint: str | None = None) -> list[Router]:
        """Current routers, highest priority first (ties by name, as Traefik sorts them)."""
        out = [r for ing in self._ingresses() for r in routers_for(ing)]
        if entrypoint is not None:
            out = [r for r in out if r.serves(entrypoint)]
        return sorted(out, key=lambda r: (-r.priority, r.name))

    def _store(self) -> list[CertKey]:
        """Certificates from every Ingress's spec.tls secrets, in Traefik's sorted secret-key order."""
        found: dict[str, CertKey] = {}
        for ing in self._ingresses():
            if _router_config(ing) is None:
                continue
            ns = (ing.get("metadata") or {}).get("namespace", "default")
            for t in (ing.get("spec") or {}).get("tls") or []:
                name = t.get("secretName")
                if name and f"{ns}-{name}" not in found:
                    ck = self._load_secret(ns, name)
                    if ck is not None:
                        found[f"{ns}-{name}"] = ck
        return [found[k] for k in sorted(found)]

    def _load_secret(self, namespace: str, name: str) -> CertKey | None:
        data = (self._secret(namespace, name) or {}).get("data") or {}
        crt, key = data.get("tls.crt", ""), data.get("tls.key", "")
        if not crt or not key:
            return None
        if (crt, key) not in self._parsed:
            try:
                ck = pki.certkey_from_pem(base64.b64decode(crt), base64.b64decode(key))
            except (ValueError, TypeError, binascii.Error):
                ck = None  # Traefik logs "Error configuring TLS" and carries on without it
            self._parsed[(crt, key)] = ck
        return self._parsed[(crt, key)]

    def cert_for(self, sni: str) -> CertKey:
        """The certificate Traefik presents for ``sni``: a stored cert naming it, else its default."""
        sni = sni.lower().rstrip(".")
        if not sni:
            return self.default_cert
        store = [(ck, _cert_names(ck)) for ck in self._store()]
        for ck, names in store:
            if sni in names:
                return ck
        for ck, names in store:
            if any(n.startswith("*.") and sni.partition(".")[2] == n[2:] for n in names):
                return ck
        return self.default_cert

    def endpoint(self, entrypoint: str) -> Endpoint:
        """The listener for ``web`` (http) or ``websecure`` (https)."""
        if entrypoint not in self._endpoints:
            secure = entrypoint == "websecure"

            async def handler(req: HttpRequest) -> HttpResponse:
                return await self.handle(entrypoint, req)

            self._endpoints[entrypoint] = Endpoint(
                f"traefik {entrypoint}",
                "https" if secure else "http",
                handler,
                self.cert_for if secure else None,
            )
        return self._endpoints[entrypoint]

    async def handle(self, entrypoint: str, req: HttpRequest) -> HttpResponse:
        host_header = req.headers.get("Host") or req.parts.netloc
        host = (urlsplit(f"//{host_header}").hostname or "").rstrip(".")
        for router in self.routers(entrypoint):
            if not router.matches(host, req.path):
                continue
            try:
                return await self._backend(
                    router.namespace, router.service, router.port, self._forward(entrypoint, req, host_header)
                )
            except LookupError:
                continue  # no such Service/port or no endpoints: Traefik never built this router
            except NetError:
                return HttpResponse.text(502, "Bad Gateway")
            except TimeoutError:
                return HttpResponse.text(504, "Gateway Timeout")
        # Go's http.NotFound, which Traefik answers when no router matches.
        return HttpResponse.text(404, "404 page not found\n", X_Content_Type_Options="nosniff")

    @staticmethod
    def _forward(entrypoint: str, req: HttpRequest, host_header: str) -> HttpRequest:
        """The request as the backend sees it: same Host, plain HTTP, X-Forwarded-* set by Traefik."""
        # Without forwardedHeaders.trustedIPs (K3s sets none) Traefik drops incoming X-Forwarded-*.
        headers = req.headers.copy()
        headers.items = [(k, v) for k, v in headers.items if not k.title().startswith(_FORWARDING_HEADERS)]
        secure = entrypoint == "websecure"
        client = peer_ip(req, "10.42.0.1")  # ServiceLB SNATs outside traffic to the node's cni0 address
        port = urlsplit(f"//{host_header}").port or (443 if secure else 80)
        headers.set("Host", host_header)
        headers.set("X-Forwarded-For", client)
        headers.set("X-Forwarded-Host", host_header)
        headers.set("X-Forwarded-Port", str(port))
        headers.set("X-Forwarded-Proto", "https" if secure else "http")
        headers.set("X-Forwarded-Server", "traefik")
        headers.set("X-Real-Ip", client)
        path_qs = req.path + (f"?{req.query}" if req.query else "")
        out = HttpRequest(req.method, f"http://{host_header}{path_qs}", headers, req.body)
        out.remote_addr = client
        return out
