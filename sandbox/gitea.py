"""Gitea's container registry as a Docker client sees it: the /v2 API and the /v2/token realm.

Modelled on Gitea's ``routers/api/packages/container``. The realm depends on the version
(research/upstream-behaviour.md; the 1.26 rule is what a real Gitea 1.26.0 does in
tests/real/test_gitea_real.py): up to 1.22.0 it is ROOT_URL + ``v2/token`` (the guide's
"Understanding the Docker v2 Auth Flow"); from 1.22.1 the request's ``Host`` with the scheme of
``X-Forwarded-Proto`` when that header is present (else ROOT_URL without its sub-path); from 1.26
(``PUBLIC_URL_DETECTION=auto``) the request's ``Host`` always. Basic auth is accepted on the registry
API itself, and anonymous callers get a ghost token unless sign-in is required
(test-environment.md, item 4) — a 200 from the realm proves nothing about credentials.

Uploads follow Gitea's rules (research/upstream-behaviour.md, "Gitea container registry"):
blobs belong to one image (another image reads them only after a mount, which checks that
the caller may pull the source); after the first PATCH every chunk needs a ``Content-Range``
starting where the upload stands (else 400 "Stream uploads after first write are not
allowed", or 416); a blob's digest is verified on PUT; a manifest PUT needs every blob and
child manifest it names in the same image (MANIFEST_BLOB_UNKNOWN) and an index must not
contain an index (MANIFEST_INVALID); tags are stored lowercase; image names must be
lowercase. ``duplicate_key`` reproduces the 500 of concurrent manifest PUTs to one image.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from . import oci
from .http import Headers, HttpRequest, HttpResponse

SERVICE = "container_registry"
# The Gitea version the model behaves as. The guide's era (the realm is ROOT_URL): with 1.22.1+ the guide's
# Caddy → Traefik web path makes the realm plain HTTP (Traefik sets X-Forwarded-Proto: http), which the wizard
# reports; `ghcr2gitea sandbox --gitea-version 1.26.0` shows it.
DEFAULT_VERSION = "1.22.0"


def parse_version(text: str) -> tuple[int, int, int]:
    """``1.22.1`` (or ``v1.22.1``, ``1.26.0+rc1``) → (1, 22, 1); ValueError for anything else."""
    m = re.fullmatch(r"v?(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[-+][0-9A-Za-z.-]{1,40})?", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a Gitea version like 1.22.1")
    return int(m[1]), int(m[2]), int(m[3])
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
_API_VERSION = ("Docker-Distribution-Api-Version", "registry/2.0")
_ROUTE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs/uploads|blobs|tags)(?:/(?P<rest>.*))?$")


@dataclass
class GiteaUser:
    name: str
    token: str
    can_push: set[str]  # org names the user may push to (and so pull from)
    can_pull: set[str] = field(default_factory=set)  # further orgs it may only pull from
    revoked: bool = False  # revoked/expired access token: Basic and issued JWTs → 401
    more_tokens: set[str] = field(default_factory=set)  # further access tokens of the user (Gitea allows many)
    read_tokens: set[str] = field(default_factory=set)  # further tokens scoped read:package: they pull, never push
    read_only: bool = False  # this request came with one of read_tokens (a per-request view, never in ``users``)

    def has_token(self, secret: str) -> bool:
        return any(hmac.compare_digest(t, secret)
                   for t in (self.token, *sorted(self.more_tokens), *sorted(self.read_tokens)))

    def as_token(self, secret: str) -> GiteaUser:
        """The user as the token ``secret`` (one of its own) lets a request act: read-only for a read token."""
        if any(hmac.compare_digest(t, secret) for t in sorted(self.read_tokens)):
            return dataclasses.replace(self, read_only=True)
        return self

    def may(self, action: str, repo: str) -> bool:
        if action == "push" and self.read_only:
            return False  # as Gitea's token scopes: read:package may pull, the push is refused (reqPackageAccess)
        org = repo.split("/", 1)[0]
        # Gitea also lets every user push to its own namespace.
        pushable = org == self.name or org in self.can_push
        return pushable if action == "push" else pushable or org in self.can_pull


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _errors(code: str, message: str, **extra) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, **extra}]}).encode()


class Gitea:
    """One Gitea instance: users, stored images, and the registry/token HTTP handler."""

    def __init__(
        self,
        root_url: str,
        users: list[GiteaUser],
        *,
        require_signin: bool = False,
        clock: Callable[[], float] = time.time,
        orgs: set[str] | None = None,
        version: str = DEFAULT_VERSION,
    ):
        self.root_url = root_url if root_url.endswith("/") else root_url + "/"
        self.version = parse_version(version)
        self.users = {u.name: u for u in users}
        # organisations that exist (default: every org a user may push to or pull from)
        self.orgs = set(orgs) if orgs is not None else {o for u in users for o in u.can_push | u.can_pull}
        self.require_signin = require_signin
        self.clock = clock
        self._secret = secrets.token_bytes(32)
        self.repos: dict[str, oci.Repo] = {}  # image → its tags, manifests and blobs (blobs are per image)
        self._uploads: dict[str, tuple[str, bytearray]] = {}  # uuid → (repo, data so far)
        # Concurrent manifest PUTs to one image: off, or the 500 Gitea gives (#19586, #31215, …).
        self.duplicate_key = False
        self.manifest_put_seconds = 0.5  # how long a manifest PUT holds the image while duplicate_key is on
        self._putting: set[str] = set()
        self.requests: deque[tuple[str, str, int]] = deque(maxlen=10000)  # (method, path, status), for tests

    @property
    def realm(self) -> str:
        """ROOT_URL's realm: what every version names when no request tells it otherwise."""
        return self.root_url + "v2/token"

    def realm_for(self, req: HttpRequest) -> str:
        """The realm this Gitea version names in the challenge it sends for ``req``."""
        if self.version <= (1, 22, 0):
            return self.realm
        host = req.headers.get("Host") or ""
        proto = (req.headers.get("X-Forwarded-Proto") or "").split(",")[0].strip().lower()
        if proto in ("http", "https") and host:
            return f"{proto}://{host}/v2/token"  # X-Forwarded-Host is ignored
        if self.version >= (1, 26, 0) and host:
            return f"{req.parts.scheme or 'http'}://{host}/v2/token"
        root = urlsplit(self.root_url)
        return f"{root.scheme}://{root.netloc}/v2/token"  # ROOT_URL without its sub-path (#31293)

    # ---- images -------------------------------------------------------------------------
    def add_image(self, repo: str, tag: str, *, size: int = 1234) -> str:
        """Store a one-layer image; returns its manifest digest (deterministic from repo+tag)."""
        seed = hashlib.sha256(f"{repo}:{tag}".encode()).digest()
        layer = (seed * (size // len(seed) + 1))[:size]
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": [_sha256(layer)]}}, sort_keys=True).encode()
        r = self.repos.setdefault(repo, oci.Repo())
        r.blobs[_sha256(layer)] = layer
        r.blobs[_sha256(config)] = config
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": len(config), "digest": _sha256(config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(layer), "digest": _sha256(layer)}],
        }, indent=3).encode()
        return self._store_manifest(repo, tag, MANIFEST_V2, manifest)

    def _store_manifest(self, repo: str, ref: str, media_type: str, body: bytes) -> str:
        digest = _sha256(body)
        r = self.repos.setdefault(repo, oci.Repo())
        r.manifests[digest] = (media_type, body)
        if not ref.startswith("sha256:"):
            r.tags[ref.lower()] = digest
        return digest

    def store(self, repo: str, tag: str, content: oci.Content) -> str:
        """Put ``content`` (an image with its children and blobs, e.g. from GHCR) in ``repo`` under ``tag``."""
        r = self.repos.setdefault(repo, oci.Repo())
        r.blobs.update(content.blobs)
        r.manifests.update(content.manifests)
        digest = oci.top(content)
        r.tags[tag.lower()] = digest
        return digest

    def has_manifest(self, repo: str, ref: str) -> str | None:
        """The manifest digest that ``ref`` (tag or digest) names in ``repo``, if any."""
        r = self.repos.get(repo)
        if r is None:
            return None
        digest = ref if ref.startswith("sha256:") else r.tags.get(ref.lower())
        return digest if digest in r.manifests else None

    def tag_digests(self) -> dict[str, str]:
        """``{"<repo>:<tag>": digest}`` of every tag (the state JSON's ``registries.gitea``)."""
        return {f"{repo}:{tag}": d for repo, r in sorted(self.repos.items()) for tag, d in sorted(r.tags.items())}

    # ---- tokens -------------------------------------------------------------------------
    def _issue(self, user: GiteaUser | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue  # "*" and unknown scopes grant nothing beyond the user itself
            _, repo, actions = parts
            granted = [a for a in actions.split(",") if user and a in ("pull", "push") and user.may(a, repo)]
            access.append({"type": "repository", "name": repo, "actions": granted})
        now = int(self.clock())
        claims = {"iss": "gitea", "sub": user.name if user else "", "aud": SERVICE,
                  "exp": now + 3600, "iat": now, "access": access}
        if user is not None and user.read_only:
            claims["read_only"] = True  # the JWT carries the access token's scope, as Gitea's does
        signing_input = _b64url(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64url(json.dumps(claims).encode())
        sig = hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + _b64url(sig)

    def token_user(self, token: str) -> dict | None:
        """Decoded claims of a token this instance issued, if still valid."""
        try:
            head_payload, sig = token.rsplit(".", 1)
            want = hmac.new(self._secret, head_payload.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(want, _unb64url(sig)):
                return None
            claims = json.loads(_unb64url(head_payload.split(".", 1)[1]))
        except (ValueError, IndexError):
            return None
        if claims.get("iss") != "gitea" or claims.get("aud") != SERVICE or claims.get("exp", 0) <= self.clock():
            return None
        sub = claims.get("sub", "")
        # Simplification: revoking the access token also kills JWTs already issued with it.
        if sub and (sub not in self.users or self.users[sub].revoked):
            return None
        return claims

    # ---- HTTP ---------------------------------------------------------------------------
    def _who(self, req: HttpRequest) -> tuple[str, GiteaUser | None]:
        """("none"|"bad"|"ghost"|"user", user) for the request's Authorization header."""
        auth = req.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            claims = self.token_user(value.strip())
            if claims is None:
                return "bad", None
            if not claims["sub"]:
                return "ghost", None
            user = self.users[claims["sub"]]
            return "user", dataclasses.replace(user, read_only=True) if claims.get("read_only") else user
        if scheme.lower() == "basic":
            try:
                name, _, secret = base64.b64decode(value.strip()).decode().partition(":")
            except ValueError:
                return "bad", None
            user = self.users.get(name)
            if user and not user.revoked and user.has_token(secret):
                return "user", user.as_token(secret)
            return "bad", None
        return "none", None

    def _challenge(self, req: HttpRequest, scope: str, message: str = "authentication required") -> HttpResponse:
        h = Headers([
            ("Content-Type", "application/json"),
            ("Www-Authenticate", f'Bearer realm="{self.realm_for(req)}",service="{SERVICE}",scope="{scope}"'),
            _API_VERSION,
        ])
        return HttpResponse(401, h, _errors("UNAUTHORIZED", message, detail=None))

    @staticmethod
    def _json(status: int, body: bytes, **hdrs: str) -> HttpResponse:
        h = Headers([("Content-Type", "application/json"), _API_VERSION])
        for k, v in hdrs.items():
            h.set(k.replace("_", "-"), v)
        return HttpResponse(status, h, body)

    async def handle(self, req: HttpRequest) -> HttpResponse:
        """Serve one request that reached Gitea (directly or through a proxy)."""
        resp = await self._handle(req)
        if req.path.startswith("/v2"):
            self.requests.append((req.method, req.path, resp.status))
        return resp

    def owner_exists(self, name: str) -> bool:
        return name in self.users or name in self.orgs

    def _api(self, req: HttpRequest) -> HttpResponse | None:
        """``GET /api/v1/orgs/NAME`` and ``/api/v1/users/NAME`` (public owners), as a client checks an owner."""
        m = re.match(r"^/api/v1/(orgs|users)/([^/]+)$", req.path)
        if not m or req.method not in ("GET", "HEAD"):
            return None
        kind, name = m[1], m[2]
        exists = name in self.orgs if kind == "orgs" else name in self.users
        if not exists:
            what = f"org does not exist [id: 0, name: {name}]" if kind == "orgs" else \
                f"user redirect does not exist [name: {name}]"
            return self._json(404, json.dumps({"errors": [what], "message": "The target couldn't be found.",
                                               "url": self.root_url + "api/swagger"}).encode())
        ident = int(hashlib.sha256(name.encode()).hexdigest()[:6], 16)
        doc = {"id": ident, "username": name, "full_name": "", "visibility": "public"}
        doc |= {"name": name} if kind == "orgs" else {"login": name}
        return self._json(200, json.dumps(doc).encode())

    async def _handle(self, req: HttpRequest) -> HttpResponse:
        path = req.path
        if path.startswith("/api/v1/") and (api := self._api(req)) is not None:
            return api
        if path != "/v2" and not path.startswith("/v2/"):
            return HttpResponse.text(200, "<!DOCTYPE html><html><head><title>Gitea</title></head>"
                                          "<body>Gitea: Git with a cup of tea</body></html>", "text/html; charset=utf-8")
        if path == "/v2/token":
            # Gitea only routes GET here; containerd's POST gets a 404 and falls back to GET.
            return self._token(req) if req.method == "GET" else self._not_found()
        if path in ("/v2", "/v2/"):
            return self._base(req)
        m = _ROUTE.match(path)
        if not m:
            return self._not_found()
        repo, kind, rest = m["name"], m["kind"], m["rest"] or ""
        action = "push" if kind == "blobs/uploads" or req.method not in ("GET", "HEAD") else "pull"
        who, user = self._who(req)
        if who != "user":
            scope = f"repository:{repo}:pull" + (",push" if action == "push" else "")
            return self._challenge(req, scope)
        if not self.owner_exists(repo.split("/", 1)[0].lower()):
            return self._json(404, _errors("NAME_UNKNOWN", "repository name not known to registry"))
        if not user.may(action, repo):
            # as real Gitea (reqPackageAccess): 401 with a Basic challenge and a plain-text body, not 403
            return HttpResponse(401, Headers([("Content-Type", "text/plain; charset=utf-8"),
                                              ("Www-Authenticate", 'Basic realm="Gitea Package API"')]),
                                b"reqPackageAccess\n")
        if action == "push" and repo != repo.lower():
            return self._json(400, _errors("NAME_INVALID", "invalid repository name"))
        if kind == "manifests" and rest:
            return await self._manifest(req, repo, rest)
        if kind == "blobs/uploads":
            return self._upload(req, repo, rest, user)
        if kind == "blobs" and rest and req.method in ("GET", "HEAD"):
            return self._blob(req, repo, rest)
        if kind == "tags" and rest == "list" and req.method == "GET":
            return self._tags(req, repo)
        return self._not_found()

    def _tags(self, req: HttpRequest, repo: str) -> HttpResponse:
        """Tags in order, paginated by ``n``/``last``; Gitea sets Link on every non-empty page."""
        q = parse_qs(req.query)
        r = self.repos.get(repo)
        if r is None:
            return self._json(404, _errors("NAME_UNKNOWN", "repository name not known to registry"))
        tags = sorted(r.tags)
        last = (q.get("last") or [""])[0]
        if last:
            tags = [t for t in tags if t > last]
        hdrs = {}
        n_text = (q.get("n") or [""])[0]
        if n_text.isdigit() and int(n_text) > 0:
            tags = tags[:int(n_text)]
            if tags:
                hdrs["Link"] = f'</v2/{repo}/tags/list?last={tags[-1]}&n={n_text}>; rel="next"'
        return self._json(200, json.dumps({"name": repo, "tags": tags}).encode(), **hdrs)

    def _not_found(self) -> HttpResponse:
        return self._json(404, _errors("NOT_FOUND", "not found"))

    def _base(self, req: HttpRequest) -> HttpResponse:
        who, _ = self._who(req)
        if who == "user" or (who == "ghost" and not self.require_signin):
            return self._json(200, b"{}")
        return self._challenge(req, "*")

    def _token(self, req: HttpRequest) -> HttpResponse:
        who, user = self._who(req)
        if who == "bad":
            if self.version <= (1, 22, 0):  # as real 1.21.11 answers: its auth group's error, in plain text
                return HttpResponse(401, Headers([("Content-Type", "text/plain; charset=utf-8")]),
                                    b"authGroup.Verify\n")
            # as real 1.26.0 answers: the registry's JSON error, with its challenge
            return dataclasses.replace(self._challenge(req, "*"), body=_errors("UNAUTHORIZED", ""))
        if who in ("none", "ghost") and self.require_signin:
            return self._challenge(req, "*")
        scopes = [s for v in parse_qs(req.query).get("scope", []) for s in v.split(" ") if s]
        return self._json(200, json.dumps({"token": self._issue(user, scopes)}).encode())

    async def _manifest(self, req: HttpRequest, repo: str, ref: str) -> HttpResponse:
        if req.method == "PUT":
            return await self._put_manifest(req, repo, ref)
        if req.method not in ("GET", "HEAD"):
            return self._not_found()
        digest = self.has_manifest(repo, ref)
        if digest is None:
            return self._json(404, _errors("MANIFEST_UNKNOWN", "manifest unknown"))
        media_type, body = self.repos[repo].manifests[digest]
        h = Headers([("Content-Type", media_type), ("Content-Length", str(len(body))),
                     ("Docker-Content-Digest", digest), _API_VERSION])
        return HttpResponse(200, h, body if req.method == "GET" else b"")

    async def _put_manifest(self, req: HttpRequest, repo: str, ref: str) -> HttpResponse:
        media_type = (req.headers.get("Content-Type") or "").split(";")[0].strip()
        body = req.body
        digest = _sha256(body)
        if ref.startswith("sha256:") and ref != digest:
            return self._json(400, _errors("DIGEST_INVALID", "provided digest did not match uploaded content"))
        if media_type not in oci.MANIFEST_TYPES:
            return self._json(400, _errors("MANIFEST_INVALID", "manifest invalid"))
        try:
            blobs, children = oci.references(media_type, body)
        except ValueError:
            return self._json(400, _errors("MANIFEST_INVALID", "manifest invalid"))
        r = self.repos.get(repo) or oci.Repo()
        if any(mt in oci.INDEX_TYPES for _, mt in children):
            return self._json(400, _errors("MANIFEST_INVALID", "manifest invalid"))
        if any(d not in r.blobs for d in blobs) or any(d not in r.manifests for d, _ in children):
            return self._json(404, _errors("MANIFEST_BLOB_UNKNOWN", "manifest blob unknown"))
        if self.duplicate_key:
            if repo in self._putting:
                return self._json(500, _errors("UNKNOWN", 'pq: duplicate key value violates unique constraint '
                                                          '"UQE_package_version_s"'))
            self._putting.add(repo)
            try:
                await asyncio.sleep(self.manifest_put_seconds)
            finally:
                self._putting.discard(repo)
        digest = self._store_manifest(repo, ref, media_type, body)
        return self._json(201, b"", Location=f"/v2/{repo}/manifests/{digest}", Docker_Content_Digest=digest)

    def _blob(self, req: HttpRequest, repo: str, digest: str) -> HttpResponse:
        data = self.repos.get(repo, oci.Repo()).blobs.get(digest)
        if data is None:
            return self._json(404, _errors("BLOB_UNKNOWN", "blob unknown to registry"))
        h = Headers([("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data))),
                     ("Docker-Content-Digest", digest), _API_VERSION])
        return HttpResponse(200, h, data if req.method == "GET" else b"")

    def _put_blob(self, repo: str, digest: str, data: bytes) -> HttpResponse:
        if _sha256(data) != digest:
            return self._json(400, _errors("DIGEST_INVALID", "provided digest did not match uploaded content"))
        self.repos.setdefault(repo, oci.Repo()).blobs[digest] = data
        return self._json(201, b"", Location=f"/v2/{repo}/blobs/{digest}", Docker_Content_Digest=digest)

    def _upload(self, req: HttpRequest, repo: str, upload_id: str, user: GiteaUser) -> HttpResponse:
        q = parse_qs(req.query)
        digest = (q.get("digest") or [""])[0]
        if req.method == "POST" and not upload_id:
            mount, source = (q.get("mount") or [""])[0], (q.get("from") or [""])[0]
            if mount and source:
                data = self.repos.get(source, oci.Repo()).blobs.get(mount)
                if data is not None and user.may("pull", source):
                    self.repos.setdefault(repo, oci.Repo()).blobs[mount] = data
                    return self._json(201, b"", Location=f"/v2/{repo}/blobs/{mount}", Docker_Content_Digest=mount)
                # no access or no such blob: an ordinary upload session, as the spec allows
            elif digest:  # monolithic upload in one POST
                return self._put_blob(repo, digest, req.body)
            upload_id = str(uuid.uuid4())
            self._uploads[upload_id] = (repo, bytearray())
            return self._json(202, b"", Location=f"/v2/{repo}/blobs/uploads/{upload_id}",
                              Docker_Upload_UUID=upload_id, Range="0-0", Content_Length="0")
        session = self._uploads.get(upload_id)
        if session is None or session[0] != repo:
            return self._json(404, _errors("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry"))
        data = session[1]
        if req.method == "DELETE":
            del self._uploads[upload_id]
            return HttpResponse(204, Headers([_API_VERSION]))
        if req.method == "PATCH":
            content_range = req.headers.get("Content-Range")
            if content_range:
                m = re.match(r"^\s*(\d+)-(\d+)", content_range)
                if not m:
                    return self._json(400, _errors("BLOB_UPLOAD_INVALID", "blob upload invalid"))
                if int(m[1]) != len(data):
                    return self._json(416, _errors("BLOB_UPLOAD_INVALID", "blob upload invalid"))
            elif data:
                return self._json(400, _errors("BLOB_UPLOAD_INVALID", "Stream uploads after first write are not allowed"))
            data += req.body
        if req.method == "PUT":
            if not digest:
                return self._json(400, _errors("DIGEST_INVALID", "provided digest did not match uploaded content"))
            data += req.body
            del self._uploads[upload_id]
            return self._put_blob(repo, digest, bytes(data))
        if req.method in ("PATCH", "GET"):
            return self._json(202 if req.method == "PATCH" else 204, b"",
                              Location=f"/v2/{repo}/blobs/uploads/{upload_id}", Docker_Upload_UUID=upload_id,
                              Range=f"0-{max(len(data) - 1, 0)}")
        return self._not_found()
