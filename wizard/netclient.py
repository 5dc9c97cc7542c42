"""HTTPS from the operator's machine, with curl-style ``--resolve`` host mapping.

``--resolve HOST:PORT:ADDR`` connects to ADDR while SNI and certificate checks still use
HOST (for clusters whose DNS is not ready, and for the sandbox). Names under ``.test``
(and the other reserved TLDs) are never handed to the system resolver: unmapped, they
fail at once, so a test hostname can never leave the machine.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import threading

import httpcore
import httpx

from .plan import parse_resolve

RESERVED_TLDS = (".test", ".example", ".invalid", ".localhost")
Mapping = dict[tuple[str, int], str]


class HostNotMapped(OSError):
    """A reserved test name without a --resolve mapping: never looked up in DNS."""


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def connect_address(mapping: Mapping, host: str, port: int) -> str:
    """Where to connect for host:port: the --resolve address, else the name itself (system resolver).

    Raises HostNotMapped for a reserved name (``*.test`` …) that has no mapping.
    """
    addr = mapping.get((host.lower().rstrip("."), port))
    if addr is not None:
        return addr
    if not is_ip(host) and host.lower().rstrip(".").endswith(RESERVED_TLDS):
        raise HostNotMapped(f"{host}: no --resolve mapping for {host}:{port} (reserved name, not looked up in DNS)")
    return host


def mapping_of(resolve: tuple[str, ...] | list[str] | Mapping) -> Mapping:
    if isinstance(resolve, dict):
        return {(h.lower(), p): a for (h, p), a in resolve.items()}
    return parse_resolve(resolve)


class GreedyStream(httpcore.NetworkStream):
    """A sync stream whose ``read`` returns whatever the socket already holds, up to ``read_size`` bytes.

    httpcore asks for 64 KiB and TLS hands over one record (16 KiB) per call, so a large body costs
    one trip through h11 and httpx per 16 KiB — measured at half the CPU of a registry copy. After the
    first (blocking) read this one keeps reading without blocking while data is there: one trip per
    ``read_size``. Everything else is the wrapped stream's.
    """

    def __init__(self, inner: httpcore.NetworkStream, read_size: int):
        self.inner, self.read_size = inner, read_size

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        first = self.inner.read(max_bytes, timeout)
        sock = self.inner.get_extra_info("socket")
        if not first or sock is None or len(first) >= self.read_size:
            return first
        parts, n = [first], len(first)
        sock.settimeout(0.0)
        try:
            while n < self.read_size:
                try:
                    data = sock.recv(min(self.read_size - n, 256 * 1024))
                except OSError:  # nothing more yet (SSLWantRead, EAGAIN), or an error the next read raises
                    break
                if not data:
                    break
                parts.append(data)
                n += len(data)
        finally:
            sock.settimeout(timeout)
        return b"".join(parts)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, timeout)

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        return GreedyStream(self.inner.start_tls(ssl_context, server_hostname, timeout), self.read_size)

    def get_extra_info(self, info: str):
        return self.inner.get_extra_info(info)


class MappedBackend(httpcore.SyncBackend):
    """httpcore's sync backend, connecting to the --resolve address (TLS still by name); ``read_size``:
    reads gather what the socket holds up to that many bytes (GreedyStream), for bulk transfers."""

    def __init__(self, mapping: Mapping, read_size: int | None = None):
        self.mapping = mapping
        self.read_size = read_size

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addr = connect_address(self.mapping, host, port)
        except HostNotMapped as e:
            raise httpcore.ConnectError(str(e)) from None
        stream = super().connect_tcp(addr, port, timeout, local_address, socket_options)
        return GreedyStream(stream, self.read_size) if self.read_size else stream


class MappedAsyncBackend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio backend, connecting to the --resolve address (TLS still by name)."""

    def __init__(self, mapping: Mapping, inner: httpcore.AsyncNetworkBackend | None = None):
        self.mapping = mapping
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addr = connect_address(self.mapping, host, port)
        except HostNotMapped as e:
            raise httpcore.ConnectError(str(e)) from None
        return await self.inner.connect_tcp(addr, port, timeout=timeout, local_address=local_address,
                                            socket_options=socket_options)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):  # pragma: no cover - unused
        return await self.inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


_CONTEXTS: dict[tuple, ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def ssl_context(ca_file: str | None = None, verify: bool = True, *, system_roots: bool = True,
                check_hostname: bool = True) -> ssl.SSLContext:
    """Verification as the wizard does it: the OS roots plus the plan's CA file; or none at all.

    Loading the OS roots costs ~35 ms, so contexts are made once per (settings, CA file version)
    and shared: an SSLContext is safe to use for many connections at once.
    """
    stamp = None
    if ca_file and verify:
        try:
            st = os.stat(ca_file)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
    key = (ca_file if verify else None, stamp, verify, system_roots, check_hostname)
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            ctx = _make_context(ca_file, verify, system_roots=system_roots, check_hostname=check_hostname)
            _CONTEXTS[key] = ctx
        return ctx


def _make_context(ca_file: str | None, verify: bool, *, system_roots: bool, check_hostname: bool) -> ssl.SSLContext:
    if not verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context() if system_roots else ssl.create_default_context(cafile=ca_file)
    if ca_file and system_roots:
        ctx.load_verify_locations(cafile=ca_file)
    ctx.check_hostname = check_hostname
    return ctx


def client(resolve: tuple[str, ...] | list[str] = (), *, ca_file: str | None = None, verify: bool = True,
           timeout: float = 10.0, read_size: int | None = None) -> httpx.Client:
    """A sync httpx.Client that honours --resolve; ``read_size``: for bulk bodies, see GreedyStream."""
    ctx = ssl_context(ca_file, verify)
    transport = httpx.HTTPTransport(verify=ctx)
    # httpx 0.28 takes no network backend; the connection pool is where httpcore accepts one
    transport._pool = httpcore.ConnectionPool(ssl_context=ctx,
                                              network_backend=MappedBackend(mapping_of(resolve), read_size))
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


def async_client(resolve: tuple[str, ...] | list[str] | Mapping = (), *, ca_file: str | None = None,
                 verify: bool = True, timeout: float = 10.0, max_connections: int = 32) -> httpx.AsyncClient:
    """An httpx.AsyncClient that honours --resolve and never resolves reserved names."""
    ctx = ssl_context(ca_file, verify)
    transport = httpx.AsyncHTTPTransport(verify=ctx)
    transport._pool = httpcore.AsyncConnectionPool(ssl_context=ctx, max_connections=max_connections,
                                                   network_backend=MappedAsyncBackend(mapping_of(resolve)))
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


def tls_error_text(err: BaseException) -> str:
    """A short, operator-facing wording of an SSL failure (when no TLS report says it better)."""
    text = str(err)
    for needle, say in (("CERTIFICATE_VERIFY_FAILED", "certificate verify failed"),
                        ("Hostname mismatch", "certificate name mismatch"),
                        ("self-signed certificate", "self-signed certificate"),
                        ("certificate has expired", "certificate has expired")):
        if needle in text:
            detail = re.sub(r"^[\s()_']+|[\s()_']+$", "", text.split("certificate verify failed:")[-1])
            detail = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", detail)
            return f"{say}: {detail}" if detail and detail != text else say
    return text[:200]


def is_tls_error(err: BaseException) -> bool:
    e: BaseException | None = err
    while e is not None:
        if isinstance(e, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(e) or "SSL" in type(e).__name__:
            return True
        e = e.__cause__ or e.__context__
    return False


def error_text(err: BaseException) -> str:
    """The innermost useful message of a transport error ("connection refused", "no mapping …")."""
    e: BaseException | None = err
    texts = []
    while e is not None:
        if str(e):
            texts.append(str(e))
        e = e.__cause__ or e.__context__
    for t in texts:
        if "no --resolve mapping" in t:
            return t
    return texts[0] if texts else type(err).__name__


__all__ = ["client", "async_client", "connect_address", "HostNotMapped", "ssl_context", "tls_error_text",
           "is_tls_error", "error_text", "is_ip"]
