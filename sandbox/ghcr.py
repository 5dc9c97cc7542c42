"""GitHub's container registry (ghcr.io) as a registry client sees it, and the storage host its blobs live on.

Modelled on what clients meet at ghcr.io (research/image-copy.md and the issue threads it cites):
- ``GET /token?scope=repository:OWNER/NAME:pull&service=ghcr.io`` issues ``{"token": …}`` with no
  ``expires_in``; anonymous callers get one for public packages only (a private one answers
  ``401``, openai/tunnel-client#75); a personal access token as the Basic password unlocks the
  private packages of the orgs it can read;
- ``/v2/`` and every registry route answer ``401 UNAUTHORIZED "authentication required"`` with a
  Bearer challenge; a token without access to the package gets ``403 DENIED``;
- manifests in all four media types, ``Docker-Content-Digest``; an index asked for with an
  ``Accept`` that does not name its type is ``404 MANIFEST_UNKNOWN`` ("OCI index found, but
  accept header does not support OCI indexes");
- tag lists paginate with ``n``/``last`` and ``Link: <…>; rel="next"``; there is no ``_catalog``;
- a switchable rate limit: ``429`` with ``Retry-After`` and GHCR's hint in the body
  (``toomanyrequests: retry-after: …, allowed: 44000/minute``);
- blob ``GET``s are ``307`` redirects to a storage host with signed URLs that expire and that
  refuse ``HEAD`` (stargz-snapshotter#167). The registry is read-only here: pushes are denied.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, urlencode

from . import oci
from .http import Headers, HttpRequest, HttpResponse

HOST = "ghcr.io"
STORAGE_HOST = "pkg-containers.githubusercontent.com"
_ROUTE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs/uploads|blobs|tags|referrers)(?:/(?P<rest>.*))?$")
_API_VERSION = ("Docker-Distribution-Api-Version", "registry/2.0")


def _errors(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


@dataclass
class GhcrUser:
    """A GitHub account and its personal access token (``read:packages``)."""

    name: str
    pat: str
    can_read: set[str] = field(default_factory=set)  # orgs whose private packages it may pull


class Ghcr:
    """The images on ghcr.io, the token service, and the storage host's signed URLs."""

    def __init__(self, users: list[GhcrUser], *, public: set[str] = frozenset(), clock: Callable[[], float] = time.time,
                 url_ttl: float = 300.0):
        self.users = {u.name: u for u in users}
        self.public = set(public)  # repos anyone may pull
        self.clock = clock
        self.url_ttl = url_ttl  # how long a storage redirect stays valid
        self.repos: dict[str, oci.Repo] = {}
        self.throttled = 0  # the next N registry requests answer 429
        self.retry_after = 1
        self.requests: deque[tuple[str, str, str, int]] = deque(maxlen=10000)  # (method, host, path, status)
        self._secret = secrets.token_bytes(32)
        self._tokens: dict[str, tuple[frozenset[str], float]] = {}  # token → (pullable repos, issued)
        self._held: dict[str, threading.Event] = {}  # blob digest → the storage host answers once it is set

    # ---- content ------------------------------------------------------------------------
    def put(self, repo: str, tag: str, content: oci.Content) -> str:
        """Store ``content`` in ``repo`` and point ``tag`` at its top manifest; returns the digest."""
        r = self.repos.setdefault(repo, oci.Repo())
        r.manifests.update(content.manifests)
        r.blobs.update(content.blobs)
        digest = oci.top(content)
        r.tags[tag] = digest
        return digest

    def load(self, org: str, images: dict[str, dict[str, oci.Content | str]]) -> None:
        for name, tags in images.items():
            repo = f"{org}/{name}"
            for tag, content in tags.items():
                if isinstance(content, str):
                    self.repos[repo].tags[tag] = self.repos[repo].tags[content]
                else:
                    self.put(repo, tag, content)

    def digest(self, repo: str, ref: str) -> str | None:
        r = self.repos.get(repo)
        if r is None:
            return None
        digest = ref if ref.startswith("sha256:") else r.tags.get(ref)
        return digest if digest in r.manifests else None

    def tag_digests(self) -> dict[str, str]:
        """``{"<repo>:<tag>": digest}`` of every tag (the state JSON's ``registries.ghcr``)."""
        return {f"{repo}:{tag}": d for repo, r in sorted(self.repos.items()) for tag, d in sorted(r.tags.items())}

    def throttle(self, count: int, retry_after: int = 1) -> None:
        """Answer the next ``count`` registry requests with 429 (``Retry-After: retry_after``)."""
        self.throttled, self.retry_after = count, retry_after

    # ---- tokens -------------------------------------------------------------------------
    def _user(self, req: HttpRequest) -> tuple[str, GhcrUser | None]:
        auth = req.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic":
            return "none", None
        try:
            _name, _, secret = base64.b64decode(value.strip()).decode().partition(":")
        except ValueError:
            return "bad", None
        # GHCR ignores the user name: the token says who it is.
        user = next((u for u in self.users.values() if hmac.compare_digest(u.pat, secret)), None)
        return ("user", user) if user else ("bad", None)

    def _may_pull(self, user: GhcrUser | None, repo: str) -> bool:
        return repo in self.public or (user is not None and repo.split("/", 1)[0] in user.can_read | {user.name})

    def _token(self, req: HttpRequest) -> HttpResponse:
        who, user = self._user(req)
        if who == "bad":
            return self._json(401, _errors("UNAUTHORIZED", "authentication required"))
        q = parse_qs(req.query)
        scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
        repos = set()
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue
            _, repo, actions = parts
            if "push" in actions.split(",") and user is None:
                return self._json(401, _errors("UNAUTHORIZED", "authentication required"))
            if not self._may_pull(user, repo):
                if user is None:  # an anonymous token for a private (or missing) package
                    return self._json(401, _errors("UNAUTHORIZED", "authentication required"))
                continue
            repos.add(repo)
        token = base64.b64encode(f"v1:{secrets.token_hex(16)}".encode()).decode()
        self._tokens[token] = (frozenset(repos), self.clock())
        return self._json(200, json.dumps({"token": token}).encode())

    def _bearer(self, req: HttpRequest) -> frozenset[str] | None:
        auth = req.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer":
            return None
        entry = self._tokens.get(value.strip())
        return entry[0] if entry else None

    # ---- HTTP ---------------------------------------------------------------------------
    @staticmethod
    def _json(status: int, body: bytes, **hdrs: str) -> HttpResponse:
        h = Headers([("Content-Type", "application/json"), _API_VERSION])
        for k, v in hdrs.items():
            h.set(k.replace("_", "-"), v)
        return HttpResponse(status, h, body)

    @staticmethod
    def _netloc(req: HttpRequest) -> str:
        return req.headers.get("Host") or req.parts.netloc

    def _challenge(self, req: HttpRequest, scope: str) -> HttpResponse:
        realm = f"https://{self._netloc(req)}/token"
        h = Headers([("Content-Type", "application/json"), _API_VERSION,
                     ("Www-Authenticate", f'Bearer realm="{realm}",service="{HOST}",scope="{scope}"')])
        return HttpResponse(401, h, _errors("UNAUTHORIZED", "authentication required"))

    async def handle(self, req: HttpRequest) -> HttpResponse:
        resp = self._handle(req)
        self.requests.append((req.method, HOST, req.path, resp.status))
        return resp

    def _handle(self, req: HttpRequest) -> HttpResponse:
        path = req.path
        if path == "/token":
            return self._token(req) if req.method == "GET" else self._json(405, _errors("UNSUPPORTED", "method"))
        if path != "/v2" and not path.startswith("/v2/"):
            return HttpResponse.text(404, "404 page not found\n")
        if self.throttled > 0:
            self.throttled -= 1
            return self._json(429, _errors("TOOMANYREQUESTS", "retry-after: 880µs, allowed: 44000/minute"),
                              Retry_After=str(self.retry_after))
        if path in ("/v2", "/v2/"):
            if self._bearer(req) is None:
                return self._challenge(req, "repository:user/image:pull")
            return self._json(200, b"{}")
        m = _ROUTE.match(path)
        if not m:
            return self._json(404, _errors("NOT_FOUND", "not found"))
        repo, kind, rest = m["name"], m["kind"], m["rest"] or ""
        granted = self._bearer(req)
        if granted is None:
            return self._challenge(req, f"repository:{repo}:pull")
        if kind == "blobs/uploads" or req.method not in ("GET", "HEAD") or repo not in granted:
            return self._json(403, _errors("DENIED", "denied"))
        r = self.repos.get(repo)
        if r is None:
            return self._json(404, _errors("NAME_UNKNOWN", "repository name not known to registry"))
        if kind == "manifests" and rest:
            return self._manifest(req, r, rest)
        if kind == "blobs" and rest:
            return self._blob(req, repo, r, rest)
        if kind == "tags" and rest == "list" and req.method == "GET":
            return self._tags(req, repo, r)
        return self._json(404, _errors("NOT_FOUND", "not found"))

    def _manifest(self, req: HttpRequest, r: oci.Repo, ref: str) -> HttpResponse:
        digest = ref if ref.startswith("sha256:") else r.tags.get(ref)
        if digest not in r.manifests:
            return self._json(404, _errors("MANIFEST_UNKNOWN", "manifest unknown"))
        media_type, body = r.manifests[digest]
        accept = ",".join(req.headers.get_all("Accept"))
        accepted = {a.split(";")[0].strip() for a in accept.split(",") if a.strip()}
        if media_type in oci.INDEX_TYPES and accepted and not accepted & {media_type, "*/*"}:
            kind = "OCI index" if media_type == oci.OCI_INDEX else "manifest list"
            return self._json(404, _errors("MANIFEST_UNKNOWN",
                                           f"{kind} found, but accept header does not support {kind}s"))
        h = Headers([("Content-Type", media_type), ("Content-Length", str(len(body))),
                     ("Docker-Content-Digest", digest), _API_VERSION])
        return HttpResponse(200, h, body if req.method == "GET" else b"")

    def _blob(self, req: HttpRequest, repo: str, r: oci.Repo, digest: str) -> HttpResponse:
        data = r.blobs.get(digest)
        if data is None:
            return self._json(404, _errors("BLOB_UNKNOWN", "blob unknown to registry"))
        if req.method == "HEAD":
            h = Headers([("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data))),
                         ("Docker-Content-Digest", digest), _API_VERSION])
            return HttpResponse(200, h)
        return HttpResponse(307, Headers([("Location", self.storage_url(req, repo, digest)),
                                          ("Content-Type", "text/html; charset=utf-8"), _API_VERSION]),
                            b'<a href="">Temporary Redirect</a>.\n')

    def _tags(self, req: HttpRequest, repo: str, r: oci.Repo) -> HttpResponse:
        q = parse_qs(req.query)
        tags = sorted(r.tags)
        last = (q.get("last") or [""])[0]
        if last:
            tags = [t for t in tags if t > last]
        hdrs = {}
        n_text = (q.get("n") or [""])[0]
        if n_text:
            try:
                n = int(n_text)
            except ValueError:
                return self._json(400, _errors("PAGINATION_NUMBER_INVALID", "invalid number of results requested"))
            if n < len(tags) and n > 0:
                tags = tags[:n]
                hdrs["Link"] = f'</v2/{repo}/tags/list?{urlencode({"last": tags[-1], "n": n})}>; rel="next"'
            elif n <= 0:
                tags = []
        return self._json(200, json.dumps({"name": repo, "tags": tags}).encode(), **hdrs)

    # ---- the storage host ---------------------------------------------------------------
    def _sign(self, path: str, expires: int) -> str:
        return hmac.new(self._secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def storage_url(self, req: HttpRequest, repo: str, digest: str) -> str:
        netloc = self._netloc(req)
        port = netloc.rpartition(":")[2] if ":" in netloc else ""
        host = f"{STORAGE_HOST}:{port}" if port else STORAGE_HOST
        path = f"/ghcr1/blobs/{quote(repo, safe='')}/{digest}"
        expires = int(self.clock() + self.url_ttl)
        return f"https://{host}{path}?se={expires}&sig={self._sign(path, expires)}"

    def hold(self, digest: str) -> threading.Event:
        """The storage host answers GETs of blob ``digest`` only once the returned event is set (at most 60 s
        later): a copy that stays under way for as long as a test needs to look at it."""
        return self._held.setdefault(digest, threading.Event())

    async def storage(self, req: HttpRequest) -> HttpResponse:
        held = next((ev for d, ev in self._held.items() if req.path.endswith("/" + d)), None)
        if held is not None:
            await asyncio.to_thread(held.wait, 60)
        resp = self._storage(req)
        self.requests.append((req.method, STORAGE_HOST, req.path, resp.status))
        return resp

    def _storage(self, req: HttpRequest) -> HttpResponse:
        xml = "application/xml"
        if req.method != "GET":  # the signature is for GET: HEAD (no body) is refused
            return HttpResponse(403, Headers([("Content-Type", xml)]), b"")
        q = parse_qs(req.query)
        m = re.match(r"^/ghcr1/blobs/(?P<repo>[^/]+)/(?P<digest>sha256:[0-9a-f]{64})$", req.path)
        try:
            expires = int((q.get("se") or ["0"])[0])
        except ValueError:
            expires = 0
        sig = (q.get("sig") or [""])[0]
        if not m or not hmac.compare_digest(sig, self._sign(req.path, expires)):
            return HttpResponse.text(403, "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed"
                                          "</Code><Message>Signature did not match.</Message></Error>", xml)
        if expires <= self.clock():
            return HttpResponse.text(403, "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed"
                                          "</Code><Message>Signed expiry time must be after signed start time."
                                          "</Message></Error>", xml)
        repo = m["repo"].replace("%2F", "/").replace("%2f", "/")
        data = self.repos.get(repo, oci.Repo()).blobs.get(m["digest"])
        if data is None:
            return HttpResponse.text(404, "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobNotFound"
                                          "</Code></Error>", xml)
        return HttpResponse(200, Headers([("Content-Type", "application/octet-stream"),
                                          ("Content-Length", str(len(data)))]), data)
