"""Plain HTTP values shared by the simulated world.

The sandbox's Gitea, Traefik, Caddy, auth proxy and containerd talk to each other through
an in-process virtual network (``vnet``) rather than sockets; these are the messages they
exchange. The same handlers also serve the operator's machine over real loopback sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit


class Headers:
    """Case-insensitive, multi-valued header list (order kept)."""

    def __init__(self, items: list[tuple[str, str]] | dict[str, str] | None = None):
        if isinstance(items, dict):
            items = list(items.items())
        self.items: list[tuple[str, str]] = list(items or [])

    def get(self, name: str, default: str | None = None) -> str | None:
        low = name.lower()
        for k, v in self.items:
            if k.lower() == low:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.items if k.lower() == low]

    def set(self, name: str, value: str) -> None:
        low = name.lower()
        self.items = [(k, v) for k, v in self.items if k.lower() != low]
        self.items.append((name, value))

    def add(self, name: str, value: str) -> None:
        self.items.append((name, value))

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def copy(self) -> Headers:
        return Headers(list(self.items))

    def __repr__(self) -> str:
        return f"Headers({self.items!r})"


@dataclass
class HttpRequest:
    method: str
    url: str  # absolute: scheme://host[:port]/path?query
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def parts(self):
        return urlsplit(self.url)

    @property
    def scheme(self) -> str:
        return self.parts.scheme

    @property
    def host(self) -> str:
        """Host name without the port."""
        return self.parts.hostname or ""

    @property
    def port(self) -> int:
        p = self.parts
        return p.port or (443 if p.scheme == "https" else 80)

    @property
    def path(self) -> str:
        return self.parts.path or "/"

    @property
    def query(self) -> str:
        return self.parts.query


@dataclass
class HttpResponse:
    status: int
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8", **hdrs: str):
        h = Headers([("Content-Type", content_type)] + [(k.replace("_", "-"), v) for k, v in hdrs.items()])
        return cls(status, h, text.encode())


class NetError(Exception):
    """A transport failure, worded as Go's net/http and crypto/tls word it.

    ``str(err)`` is what a Go client (containerd, kaniko, crictl) would print after its
    own prefix, e.g. ``dial tcp: lookup x.svc.cluster.local: no such host`` or
    ``tls: failed to verify certificate: x509: certificate signed by unknown authority``.
    ``curl_code``/``curl_message`` are what curl would report for the same failure.
    """

    def __init__(self, message: str, *, kind: str = "net", curl_code: int = 7, curl_message: str | None = None):
        super().__init__(message)
        self.kind = kind  # dns | refused | timeout | tls | net
        self.curl_code = curl_code
        self.curl_message = curl_message or message


@dataclass
class TLSConfig:
    """How a simulated client checks a server certificate.

    ``verify=False`` is insecure_skip_verify / curl -k. ``ca_pems`` are extra trusted CA
    certificates (PEM bytes); ``system_roots`` says whether the simulated OS roots count.
    """

    verify: bool = True
    ca_pems: tuple[bytes, ...] = ()
    system_roots: bool = True
