"""The nginx auth proxy, as far as its config decides whether the token flow works.

What matters from Step 3 of the guide: ``listen 443 ssl`` with the mounted certificate,
``proxy_pass`` to Gitea's cluster DNS name, and WHEN that name is resolved. A literal
``proxy_pass http://name`` is resolved once at startup (and nginx refuses to start when
that fails: "host not found in upstream"); ``resolver IP`` + ``set $upstream`` resolves per
request through that resolver, which only knows cluster names if it is CoreDNS.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .http import Headers, HttpRequest, HttpResponse, NetError, TLSConfig
from .memfs import FSError, MemFS
from .pki import CertKey
from .vnet import DnsView, Endpoint

CONF_DIR = "/etc/nginx/conf.d"
Fetch = Callable[..., Awaitable[HttpResponse]]


def is_nginx(image: str, argv: list[str]) -> bool:
    name = image.rsplit("/", 1)[-1].split(":")[0].split("@")[0]
    return name in ("nginx", "nginx-unprivileged", "openresty") and not argv


def _tokens(text: str) -> list[tuple[str, int]]:
    out, line = [], 1
    for m in re.finditer(r"#[^\n]*|\"[^\"]*\"|'[^']*'|[{};]|[^\s{};#]+|\n", text):
        tok = m.group()
        if tok == "\n":
            line += 1
        elif not tok.startswith("#"):
            out.append((tok.strip("\"'") if tok[0] in "\"'" else tok, line))
    return out


@dataclass
class Location:
    prefix: str
    sets: dict[str, str] = field(default_factory=dict)
    proxy_pass: str | None = None
    proxy_pass_line: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Server:
    port: int
    ssl: bool
    cert: str | None = None
    key: str | None = None
    resolver: str | None = None
    locations: list[Location] = field(default_factory=list)


def parse(text: str) -> list[Server]:
    """Parse the server blocks of a conf.d file (directives the proxy uses; the rest ignored)."""
    toks = _tokens(text)
    servers: list[Server] = []
    stack: list[str] = []
    server: Server | None = None
    loc: Location | None = None
    stmt: list[tuple[str, int]] = []
    for tok, line in toks:
        if tok == "{":
            head = [t for t, _ in stmt]
            stack.append(head[0] if head else "")
            if head[:1] == ["server"]:
                server = Server(port=80, ssl=False)
                servers.append(server)
            elif head[:1] == ["location"] and server is not None:
                loc = Location(prefix=head[-1])
                server.locations.append(loc)
            stmt = []
        elif tok == "}":
            block = stack.pop() if stack else ""
            if block == "location":
                loc = None
            elif block == "server":
                server = None
            stmt = []
        elif tok == ";":
            words = [t for t, _ in stmt]
            if words and server is not None:
                d, args = words[0], words[1:]
                target = loc
                if d == "listen" and args:
                    server.port = int(re.sub(r"\D", "", args[0].rsplit(":", 1)[-1]) or 80)
                    server.ssl = "ssl" in args
                elif d == "ssl_certificate" and args:
                    server.cert = args[0]
                elif d == "ssl_certificate_key" and args:
                    server.key = args[0]
                elif d == "resolver" and args:
                    server.resolver = args[0]
                elif d == "set" and len(args) >= 2 and target is not None:
                    target.sets[args[0].lstrip("$")] = args[1]
                elif d == "proxy_pass" and args and target is not None:
                    target.proxy_pass, target.proxy_pass_line = args[0], stmt[0][1]
                elif d == "proxy_set_header" and len(args) >= 2 and target is not None:
                    target.headers.append((args[0], args[1]))
            stmt = []
        else:
            stmt.append((tok, line))
    return servers


class Nginx:
    """A running nginx built from a container's /etc/nginx/conf.d."""

    def __init__(self, servers: list[Server], certs: dict[int, CertKey], fetch: Fetch, dns_view: DnsView,
                 cluster_dns_ip: str | None, error: str | None = None):
        self.servers, self.certs, self.fetch, self.dns = servers, certs, fetch, dns_view
        self.cluster_dns_ip = cluster_dns_ip
        self.error = error
        self.static_upstreams: dict[str, str] = {}

    @classmethod
    def from_fs(cls, fs: MemFS, fetch: Fetch, dns_view: DnsView, cluster_dns_ip: str | None = None) -> Nginx:
        servers: list[Server] = []
        conf_files = []
        if fs.isdir(CONF_DIR):
            conf_files = [f"{CONF_DIR}/{n}" for n in sorted(fs.listdir(CONF_DIR)) if n.endswith(".conf")]
        for path in conf_files:
            servers += parse(fs.read(path).decode(errors="replace"))
        self = cls(servers, {}, fetch, dns_view, cluster_dns_ip)
        for s in servers:
            if s.ssl:
                try:
                    cert_pem = fs.read(s.cert or "")
                    key_pem = fs.read(s.key or "")
                    cert = x509.load_pem_x509_certificate(cert_pem)
                    key = serialization.load_pem_private_key(key_pem, None)
                except (FSError, ValueError, TypeError):
                    self.error = (f'nginx: [emerg] cannot load certificate "{s.cert}": BIO_new_file() failed '
                                  f"(SSL: error:80000002:system library::No such file or directory)")
                    return self
                self.certs[s.port] = CertKey(cert=cert, key=key, cert_pem=cert_pem, key_pem=b"", chain_pem=cert_pem)
            for loc in s.locations:
                target = loc.proxy_pass or ""
                if target and "$" not in target:
                    host = urlsplit(target).hostname or ""
                    ip = dns_view.resolve(host)
                    if ip is None:
                        self.error = (f'nginx: [emerg] host not found in upstream "{urlsplit(target).netloc}" in '
                                      f"{conf_files[0] if conf_files else CONF_DIR}:{loc.proxy_pass_line}")
                        return self
                    self.static_upstreams[target] = ip
        return self

    def startup_log(self) -> str:
        return ("/docker-entrypoint.sh: Configuration complete; ready for start up\n"
                "nginx: [notice] start worker processes\n")

    def endpoints(self, name: str) -> dict[int, Endpoint]:
        out = {}
        for s in self.servers:
            cert = self.certs.get(s.port)
            out[s.port] = Endpoint(name, "https" if s.ssl else "http",
                                   lambda req, s=s: self.handle(s, req),
                                   (lambda sni, c=cert: c) if s.ssl else None)
        return out

    async def handle(self, server: Server, req: HttpRequest) -> HttpResponse:
        loc = max((loc for loc in server.locations if req.path.startswith(loc.prefix)), key=lambda loc: len(loc.prefix),
                  default=None)
        if loc is None or not loc.proxy_pass:
            return _page(404, "404 Not Found")
        target = loc.proxy_pass
        for var, value in loc.sets.items():
            target = target.replace("$" + var, value)
        parts = urlsplit(target)
        host = parts.hostname or ""
        if "$" in loc.proxy_pass and not _is_ip(host):
            # resolved per request, through the configured resolver only: the exact name, no search
            # domains, no /etc/hosts (nginx's resolver is a DNS client, not getaddrinfo)
            if not server.resolver:
                return _page(502, "502 Bad Gateway", f'no resolver defined to resolve {host}')
            if self.cluster_dns_ip and server.resolver.split(":")[0] != self.cluster_dns_ip:
                return _page(502, "502 Bad Gateway", f"{host} could not be resolved (110: Operation timed out)")
            ip = self.dns.cluster_dns(host.rstrip(".").lower()) if self.dns.cluster_dns else None
            if ip is None:
                return _page(502, "502 Bad Gateway", f"{host} could not be resolved (3: Host not found)")
        else:
            ip = self.static_upstreams.get(loc.proxy_pass) or self.dns.resolve(host)
        if ip is None:
            return _page(502, "502 Bad Gateway", f"{host} could not be resolved")
        headers = Headers([(k, v) for k, v in req.headers.items if k.lower() not in ("host", "connection")])
        host_hdr = req.headers.get("Host") or req.host
        for name, value in loc.headers:
            value = (value.replace("$http_host", host_hdr).replace("$host", host_hdr.split(":")[0])
                     .replace("$remote_addr", "10.42.0.1").replace("$scheme", "https" if server.ssl else "http")
                     .replace("$proxy_add_x_forwarded_for", "10.42.0.1"))
            headers.set(name, value)
        if "Host" not in headers:
            headers.set("Host", parts.netloc)
        path = req.path + (("?" + req.query) if req.query else "")
        url = f"{parts.scheme}://{ip}:{parts.port or 80}{path}"
        try:
            resp = await self.fetch(HttpRequest(req.method, url, headers, req.body), TLSConfig(verify=False), None, 10.0)
        except NetError as e:
            return _page(502, "502 Bad Gateway", str(e))
        return resp


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _page(status: int, title: str, detail: str = "") -> HttpResponse:
    body = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n" \
           f"<hr><center>nginx/1.27.2</center>\r\n</body>\r\n</html>\r\n"
    resp = HttpResponse.text(status, body, "text/html")
    resp.headers.set("Server", "nginx/1.27.2")
    if detail:
        resp.error_log = detail  # type: ignore[attr-defined]
    return resp
