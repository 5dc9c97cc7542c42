"""A small HTTP proxy in front of a real docker-registry 2.8 that adds what GHCR and Gitea do and it does not.

docker-registry is the real registry underneath (storage, token auth, digests); the proxy only
adds behaviours, each switched on by an attribute, and records every request so a test can count
what a client sent (uploads, mounts, manifest PUTs) without trusting the client's own report:

- ``require_content_range``: every PATCH after an upload's first must carry ``Content-Range``
  starting where the upload stands (Gitea; 416 with the upload's ``Range`` otherwise);
- ``max_body``: a PUT/PATCH body above N bytes answers 413 (an ingress's body size limit);
- ``cutoff`` + ``body_rate``: an upload body still arriving after T seconds is cut (the connection
  closed, no answer), with bodies read at ``body_rate`` bytes/s (a proxy's request timeout);
- ``page``: tag lists served ``n`` at a time, sorted, with ``Link: rel="next"``; ``stuck_pages``
  sends the same ``last`` forever (a client must stop);
- ``reject_429``: the next N requests matching a substring answer 429, with ``Retry-After`` or
  with GHCR's hint in the body only;
- ``redirect_blobs``: blob GETs answer 307 to a storage host on another port that refuses HEAD
  and an Authorization header, and whose URLs expire (``expire_next`` makes the next N expired);
- ``flip_blobs``: one byte of each served blob (or of the digests listed) flipped;
- ``referrers``: the OCI referrers API (registry 2.8 has none), answering from a given table.

Every request is forwarded to the registry with its Host header kept, so the upload Locations the
registry writes point back at the proxy. Loopback only; ``stop()`` ends both servers.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
PIECE = 256 * 1024


@dataclass
class Entry:
    method: str
    path: str  # with the query
    status: int | None = None
    started: float = 0.0
    ended: float = 0.0
    bytes_in: int = 0
    note: str = ""

    @property
    def plain(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)


@dataclass
class Ticket:
    path: str
    auth: str
    expires: float


@dataclass
class Quirks:
    require_content_range: bool = False
    max_body: int | None = None
    cutoff: float | None = None
    body_rate: float | None = None  # bytes per second for upload bodies
    page: int | None = None
    stuck_pages: bool = False
    # {"match": str, "count": n, "retry_after": str | None, "body": str, "status": 429, "headers": {}}
    reject_429: list[dict] = field(default_factory=list)
    redirect_blobs: bool = False
    redirect_ttl: float = 30.0
    expire_next: int = 0
    flip_blobs: bool | set[str] = False
    referrers: dict[str, list[dict]] | None = None  # subject digest → descriptors: the OCI referrers API


class QuirkProxy:
    """``QuirkProxy(upstream_port).start()``; ``url`` is ``http://127.0.0.1:PORT``; ``log`` lists every request."""

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.q = Quirks()
        self.log: list[Entry] = []
        self.storage_log: list[Entry] = []
        self.lock = threading.Lock()
        self.offsets: dict[str, int] = {}  # upload uuid → bytes the registry holds
        self.patches: dict[str, int] = {}  # upload uuid → PATCHes seen
        self.tickets: dict[str, Ticket] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.storage = ThreadingHTTPServer(("127.0.0.1", 0), self._storage_handler())
        self.storage.daemon_threads = True
        self.port = self.server.server_address[1]
        self.storage_port = self.storage.server_address[1]
        self.threads = [threading.Thread(target=s.serve_forever, name=f"quirk-{i}", daemon=True)
                        for i, s in enumerate((self.server, self.storage))]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> QuirkProxy:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        for s in (self.server, self.storage):
            s.shutdown()
            s.server_close()
        for t in self.threads:
            t.join(5)

    def reset(self) -> None:
        with self.lock:
            self.log.clear()
            self.storage_log.clear()

    # ------------------------------------------------------------------ counting
    def entries(self, method: str | None = None, pattern: str | None = None) -> list[Entry]:
        with self.lock:
            return [e for e in self.log if (method is None or e.method == method)
                    and (pattern is None or re.search(pattern, e.path))]

    def idle(self) -> bool:
        """Every request seen has finished (a killed client's last request may still be forwarded)."""
        with self.lock:
            return all(e.ended for e in self.log)

    def uploads(self) -> list[str]:
        """Digests of blob uploads the registry completed (the closing PUT answered 201)."""
        return [e.query["digest"][0] for e in self.entries("PUT", r"/blobs/uploads/") if e.status == 201
                and "digest" in e.query]

    def mounts(self) -> list[str]:
        return [e.query["mount"][0] for e in self.entries("POST", r"/blobs/uploads/\?.*mount=") if e.status == 201]

    def manifest_puts(self) -> list[str]:
        return [e.plain for e in self.entries("PUT", r"/manifests/") if e.status in (200, 201)]

    def mutating(self) -> list[Entry]:
        return [e for e in self.entries() if e.method not in ("GET", "HEAD")]

    # ------------------------------------------------------------------ the proxy
    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _do(self) -> None:
                e = Entry(self.command, self.path, started=time.monotonic())
                with proxy.lock:
                    proxy.log.append(e)
                try:
                    proxy._serve(self, e)
                finally:
                    e.ended = time.monotonic()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _do  # noqa: N815

        return Handler

    def _reply(self, h: BaseHTTPRequestHandler, e: Entry, status: int, body: bytes = b"",
               headers: dict | None = None, close: bool = False) -> None:
        e.status = status
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        if close:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _body(self, h: BaseHTTPRequestHandler, e: Entry, *, upload: bool):
        """The request body as pieces (throttled and cut off when those quirks apply); None: cut off."""
        length = int(h.headers.get("Content-Length") or 0)
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    h.rfile.readline()
                    break
                data += h.rfile.read(size)
                h.rfile.readline()
            e.bytes_in = len(data)
            return [bytes(data)]
        pieces, left = [], length
        t0 = time.monotonic()
        while left > 0:
            piece = h.rfile.read(min(PIECE, left))
            if not piece:
                break
            left -= len(piece)
            e.bytes_in += len(piece)
            pieces.append(piece)
            if upload and self.q.body_rate:
                due = t0 + e.bytes_in / self.q.body_rate
                time.sleep(max(0.0, due - time.monotonic()))
            if upload and self.q.cutoff is not None and time.monotonic() - t0 > self.q.cutoff and left > 0:
                return None
        if left > 0:  # the client gave up mid-body: nothing is forwarded
            return None
        return pieces

    def _serve(self, h: BaseHTTPRequestHandler, e: Entry) -> None:
        q = self.q
        parts = urlsplit(h.path)
        path = parts.path
        upload = "/blobs/uploads/" in path and h.command in ("PUT", "PATCH")
        for rule in q.reject_429:
            if rule["count"] > 0 and rule["match"] in h.path:
                rule["count"] -= 1
                self._body(h, e, upload=False)
                headers = {"Content-Type": "application/json", **rule.get("headers", {})}
                if rule.get("retry_after") is not None:
                    headers["Retry-After"] = rule["retry_after"]
                body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": rule.get(
                    "body", "toomanyrequests: too many requests")}]}).encode()
                self._reply(h, e, rule.get("status", 429), body, headers)
                return
        length = int(h.headers.get("Content-Length") or 0)
        if upload and q.max_body is not None and length > q.max_body:
            self._body(h, e, upload=False)  # drained, so the client reads the answer
            self._reply(h, e, 413, b"<html><body><h1>413 Request Entity Too Large</h1></body></html>",
                        {"Content-Type": "text/html"}, close=True)
            return
        uuid = path.rsplit("/", 1)[-1] if "/blobs/uploads/" in path else ""
        if h.command == "PATCH" and q.require_content_range:
            have = self.offsets.get(uuid, 0)
            cr = h.headers.get("Content-Range")
            m = re.fullmatch(r"(\d+)-(\d+)", cr or "")
            first = self.patches.get(uuid, 0) == 0
            bad = (cr is None and not first) or (cr is not None and (
                m is None or int(m.group(1)) != have or int(m.group(2)) - int(m.group(1)) + 1 != length))
            if bad:
                self._body(h, e, upload=False)
                self._reply(h, e, 416, b'{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"content range"}]}',
                            {"Range": f"0-{max(0, have - 1)}", "Location": h.path,
                             "Content-Type": "application/json"})
                return
        if h.command == "GET" and q.redirect_blobs and re.fullmatch(r"/v2/.+/blobs/sha256:[a-f0-9]{64}", path):
            ticket = secrets.token_hex(8)
            expires = time.time() + q.redirect_ttl
            if q.expire_next > 0:
                q.expire_next -= 1
                expires = time.time() - 1
            self.tickets[ticket] = Ticket(path, h.headers.get("Authorization", ""), expires)
            loc = f"http://127.0.0.1:{self.storage_port}/blob/{ticket}?" + urlencode(
                {"X-Amz-Expires": int(q.redirect_ttl), "X-Amz-Signature": secrets.token_hex(16)})
            self._reply(h, e, 307, b"", {"Location": loc})
            return
        m = re.fullmatch(r"/v2/.+/referrers/(sha256:[a-f0-9]{64})", path)
        if h.command == "GET" and q.referrers is not None and m:
            body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                               "manifests": q.referrers.get(m.group(1), [])}).encode()
            self._reply(h, e, 200, body, {"Content-Type": "application/vnd.oci.image.index.v1+json"})
            return
        if h.command == "GET" and q.page and re.fullmatch(r"/v2/.+/tags/list", path):
            self._tags(h, e, parts)
            return
        pieces = self._body(h, e, upload=upload) if h.command in ("POST", "PUT", "PATCH") else []
        if pieces is None:  # cut off: no answer, the connection closed
            e.status, e.note = None, "cut off"
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        if h.command == "PATCH":
            self.patches[uuid] = self.patches.get(uuid, 0) + 1
        resp, conn = self._forward(h.command, h.path, h.headers, pieces)
        try:
            if h.command == "PATCH" and resp.status == 202:
                self.offsets[uuid] = self.offsets.get(uuid, 0) + e.bytes_in
            flip = q.flip_blobs and h.command == "GET" and resp.status == 200 and re.fullmatch(
                r"/v2/.+/blobs/(sha256:[a-f0-9]{64})", path) and (q.flip_blobs is True or path.rsplit("/", 1)[-1]
                                                                  in q.flip_blobs)
            self._relay(h, e, resp, flip=bool(flip))
        finally:
            conn.close()

    def _forward(self, method: str, path: str, headers, pieces):
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            if k.lower() not in HOP and k.lower() != "content-length":
                conn.putheader(k, v)
        body_len = sum(len(p) for p in pieces)
        if method in ("POST", "PUT", "PATCH") or body_len:
            conn.putheader("Content-Length", str(body_len))
        conn.endheaders()
        for p in pieces:
            conn.send(p)
        return conn.getresponse(), conn

    def _relay(self, h: BaseHTTPRequestHandler, e: Entry, resp, *, flip: bool = False) -> None:
        e.status = resp.status
        h.send_response(resp.status)
        length = resp.getheader("Content-Length")
        body = None
        if length is None and h.command != "HEAD":
            body = resp.read()
            length = str(len(body))
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                h.send_header(k, v)
        if length is not None:
            h.send_header("Content-Length", length)
        h.end_headers()
        if h.command == "HEAD":
            return
        if body is not None:
            h.wfile.write(body)
            return
        left, at, half = int(length), 0, int(length) // 2
        while left > 0:
            piece = resp.read(min(PIECE, left))
            if not piece:
                break
            if flip and at <= half < at + len(piece):
                b = bytearray(piece)
                b[half - at] ^= 0x01
                piece = bytes(b)
            at += len(piece)
            left -= len(piece)
            h.wfile.write(piece)

    def _tags(self, h: BaseHTTPRequestHandler, e: Entry, parts) -> None:
        resp, conn = self._forward("GET", parts.path, h.headers, [])
        try:
            body = resp.read()
            if resp.status != 200:
                self._reply(h, e, resp.status, body, {k: v for k, v in resp.getheaders()
                                                      if k.lower() not in HOP and k.lower() != "content-length"})
                return
        finally:
            conn.close()
        data = json.loads(body)
        tags = sorted(data.get("tags") or [])
        query = parse_qs(parts.query)
        n = min(int(query.get("n", [self.q.page])[0]), self.q.page)
        last = query.get("last", [""])[0]
        rest = [t for t in tags if t > last] if last else tags
        page, more = rest[:n], len(rest) > n
        headers = {"Content-Type": "application/json"}
        if more and page:
            nxt_last = last if self.q.stuck_pages and last else page[-1]
            headers["Link"] = f'<{parts.path}?{urlencode({"n": n, "last": nxt_last})}>; rel="next"'
        self._reply(h, e, 200, json.dumps({"name": data.get("name"), "tags": page}).encode(), headers)

    # ------------------------------------------------------------------ the storage host
    def _storage_handler(self):
        proxy = self

        class Storage(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _deny(self, e: Entry, status: int, message: str) -> None:
                proxy._reply(self, e, status, f"<Error><Code>{message}</Code></Error>".encode(),
                             {"Content-Type": "application/xml"})

            def do_HEAD(self) -> None:  # noqa: N802 - presigned GET URLs refuse HEAD, as S3's do
                e = Entry("HEAD", self.path, started=time.monotonic())
                with proxy.lock:
                    proxy.storage_log.append(e)
                self._deny(e, 403, "SignatureDoesNotMatch")

            def do_GET(self) -> None:  # noqa: N802
                e = Entry("GET", self.path, started=time.monotonic())
                e.note = "authorization" if self.headers.get("Authorization") else ""
                with proxy.lock:
                    proxy.storage_log.append(e)
                ticket = proxy.tickets.get(urlsplit(self.path).path.rsplit("/", 1)[-1])
                if self.headers.get("Authorization"):
                    self._deny(e, 400, "InvalidArgument: Only one auth mechanism allowed")
                elif ticket is None:
                    self._deny(e, 403, "AccessDenied")
                elif ticket.expires < time.time():
                    self._deny(e, 403, "AccessDenied: Request has expired")
                else:
                    headers = {"Authorization": ticket.auth} if ticket.auth else {}
                    if self.headers.get("Range"):
                        headers["Range"] = self.headers["Range"]
                    headers["Host"] = f"127.0.0.1:{proxy.port}"
                    resp, conn = proxy._forward("GET", ticket.path, headers, [])
                    try:
                        proxy._relay(self, e, resp)
                    finally:
                        conn.close()

        return Storage
