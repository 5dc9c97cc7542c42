"""Gitea's registry and token realm, as Docker clients (and the guide's curl checks) see them."""

import base64
import hashlib
import json

import pytest

from sandbox.gitea import Gitea, GiteaUser
from sandbox.http import Headers, HttpRequest

ROOT = "https://gitea.k3s.example.test:41233/"
REALM = ROOT + "v2/token"
REG = "https://registry.example.test"
REPO = "jaybrto/gwa-webhook"


class Clock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def gitea(clock):
    g = Gitea(
        ROOT,
        [
            GiteaUser("registry-user", "tok-push", can_push={"jaybrto"}),
            GiteaUser("reader", "tok-read", can_push=set(), can_pull={"jaybrto"}),
            GiteaUser("outsider", "tok-out", can_push=set()),
            GiteaUser("gone", "tok-gone", can_push={"jaybrto"}, revoked=True),
        ],
        clock=clock,
    )
    g.add_image(REPO, "latest")
    return g


def basic(user, secret):
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


async def call(g, method, path, auth=None, body=b"", host=REG, **hdrs):
    h = Headers({"Authorization": auth} if auth else {})
    for k, v in hdrs.items():
        h.set(k.replace("_", "-"), v)
    return await g.handle(HttpRequest(method, host.rstrip("/") + path, h, body))


async def token(g, auth=None, scope=f"repository:{REPO}:pull"):
    resp = await call(g, "GET", f"/v2/token?service=container_registry&scope={scope}", auth, host=ROOT)
    assert resp.status == 200, resp.body
    return json.loads(resp.body)["token"]


def errors(resp):
    return json.loads(resp.body)["errors"]


async def test_v2_challenge_without_auth(gitea):
    resp = await call(gitea, "GET", "/v2/")
    assert resp.status == 401
    assert (
        resp.headers.get("Www-Authenticate")
        == f'Bearer realm="{REALM}",service="container_registry",scope="*"'
    )
    assert resp.headers.get("Docker-Distribution-Api-Version") == "registry/2.0"
    assert json.loads(resp.body) == {
        "errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}]
    }


async def test_v2_basic_and_bearer(gitea):
    assert (await call(gitea, "GET", "/v2/", basic("registry-user", "tok-push"))).status == 200
    assert (await call(gitea, "GET", "/v2/", basic("registry-user", "wrong"))).status == 401
    assert (await call(gitea, "GET", "/v2/", basic("gone", "tok-gone"))).status == 401
    ok = await call(gitea, "GET", "/v2/", "Bearer " + await token(gitea, basic("registry-user", "tok-push")))
    assert (ok.status, ok.body) == (200, b"{}")
    assert (await call(gitea, "GET", "/v2/", "Bearer garbage.x.y")).status == 401


async def test_token_claims_follow_permissions(gitea, clock):
    t = await token(gitea, basic("reader", "tok-read"), f"repository:{REPO}:pull,push")
    claims = gitea.token_user(t)
    assert claims["sub"] == "reader" and claims["iss"] == "gitea" and claims["aud"] == "container_registry"
    assert isinstance(claims["exp"], int) and claims["exp"] == int(clock.now) + 3600
    assert claims["access"] == [{"type": "repository", "name": REPO, "actions": ["pull"]}]
    t = await token(gitea, basic("registry-user", "tok-push"), f"repository:{REPO}:pull,push")
    assert gitea.token_user(t)["access"][0]["actions"] == ["pull", "push"]
    clock.now += 3601
    assert gitea.token_user(t) is None


async def test_token_body_has_only_token(gitea):
    resp = await call(
        gitea,
        "GET",
        "/v2/token?service=container_registry&scope=*",
        basic("registry-user", "tok-push"),
        host=ROOT,
    )
    assert list(json.loads(resp.body)) == ["token"]


@pytest.mark.parametrize(
    "auth", [basic("registry-user", "wrong"), basic("nobody", "x"), basic("gone", "tok-gone")]
)
async def test_token_rejects_bad_credentials(gitea, auth):
    """As real Gitea answers (tests/real/test_gitea_real.py): 1.21.11 (the model's default era, up to 1.22.0)
    its auth group's error in plain text; 1.26.0 the registry's JSON error with an empty message."""
    resp = await call(gitea, "GET", "/v2/token?service=container_registry&scope=*", auth, host=ROOT)
    assert resp.status == 401
    assert resp.headers.get("Content-Type") == "text/plain; charset=utf-8" and resp.body == b"authGroup.Verify\n"
    gitea.version = (1, 26, 0)
    resp = await call(gitea, "GET", "/v2/token?service=container_registry&scope=*", auth, host=ROOT)
    assert resp.status == 401
    assert json.loads(resp.body) == {"errors": [{"code": "UNAUTHORIZED", "message": ""}]}


async def test_anonymous_token_is_issued_but_cannot_pull(gitea):
    t = await token(gitea)  # a 200 without credentials proves nothing (ghost user)
    claims = gitea.token_user(t)
    assert claims["sub"] == "" and claims["access"] == [{"type": "repository", "name": REPO, "actions": []}]
    resp = await call(gitea, "HEAD", f"/v2/{REPO}/manifests/latest", "Bearer " + t)
    assert resp.status == 401
    assert f'scope="repository:{REPO}:pull"' in resp.headers.get("Www-Authenticate")


async def test_require_signin_refuses_anonymous_token(clock):
    g = Gitea(ROOT, [], require_signin=True, clock=clock)
    resp = await call(g, "GET", "/v2/token?service=container_registry", host=ROOT)
    assert resp.status == 401


async def test_token_post_is_404(gitea):
    resp = await call(
        gitea, "POST", "/v2/token", basic("registry-user", "tok-push"), b"grant_type=password", host=ROOT
    )
    assert resp.status == 404


async def test_manifest_head_and_get(gitea):
    digest = gitea.has_manifest(REPO, "latest")
    auth = "Bearer " + await token(gitea, basic("reader", "tok-read"))
    head = await call(gitea, "HEAD", f"/v2/{REPO}/manifests/latest", auth)
    assert head.status == 200 and head.body == b""
    assert head.headers.get("Docker-Content-Digest") == digest
    assert head.headers.get("Content-Type") == "application/vnd.docker.distribution.manifest.v2+json"
    get = await call(gitea, "GET", f"/v2/{REPO}/manifests/{digest}", auth)
    assert "sha256:" + hashlib.sha256(get.body).hexdigest() == digest
    assert json.loads(get.body)["schemaVersion"] == 2
    # Gitea takes Basic directly on the registry API too.
    assert (
        await call(gitea, "HEAD", f"/v2/{REPO}/manifests/latest", basic("reader", "tok-read"))
    ).status == 200


async def test_manifest_errors(gitea):
    resp = await call(gitea, "HEAD", f"/v2/{REPO}/manifests/latest")
    assert resp.status == 401
    assert resp.headers.get("Www-Authenticate") == (
        f'Bearer realm="{REALM}",service="container_registry",scope="repository:{REPO}:pull"'
    )
    auth = basic("reader", "tok-read")
    resp = await call(gitea, "GET", f"/v2/{REPO}/manifests/nope", auth)
    assert resp.status == 404 and errors(resp)[0]["code"] == "MANIFEST_UNKNOWN"
    resp = await call(
        gitea,
        "GET",
        f"/v2/{REPO}/manifests/latest",
        "Bearer " + await token(gitea, basic("outsider", "tok-out")),
    )
    # real Gitea 1.26 (tests/real/test_gitea_real.py): 401 with a Basic challenge, not 403 DENIED
    assert resp.status == 401 and resp.headers.get("Www-Authenticate") == 'Basic realm="Gitea Package API"'
    assert resp.body == b"reqPackageAccess\n"


async def test_push_needs_push_permission(gitea):
    pusher = "Bearer " + await token(
        gitea, basic("registry-user", "tok-push"), f"repository:{REPO}:pull,push"
    )
    resp = await call(gitea, "POST", f"/v2/{REPO}/blobs/uploads/", pusher)
    assert resp.status == 202 and resp.headers.get("Range") == "0-0"
    location = resp.headers.get("Location")
    assert location == f"/v2/{REPO}/blobs/uploads/{resp.headers.get('Docker-Upload-UUID')}"
    assert (await call(gitea, "PATCH", location, pusher, b"layer")).status == 202
    digest = "sha256:" + hashlib.sha256(b"layer").hexdigest()
    put = await call(gitea, "PUT", f"{location}?digest={digest}", pusher)
    assert put.status == 201 and put.headers.get("Docker-Content-Digest") == digest
    assert (await call(gitea, "HEAD", f"/v2/{REPO}/blobs/{digest}", pusher)).status == 200
    man = await call(
        gitea,
        "PUT",
        f"/v2/{REPO}/manifests/v2",
        pusher,
        json.dumps({"schemaVersion": 2, "config": {"digest": digest, "size": 5}, "layers": []}).encode(),
        Content_Type="application/vnd.oci.image.manifest.v1+json",
    )
    assert man.status == 201
    assert gitea.has_manifest(REPO, "v2") == man.headers.get("Docker-Content-Digest")

    started = await call(gitea, "POST", f"/v2/{REPO}/blobs/uploads/", pusher)
    assert (await call(gitea, "DELETE", started.headers.get("Location"), pusher)).status == 204

    reader = "Bearer " + await token(gitea, basic("reader", "tok-read"), f"repository:{REPO}:pull,push")
    denied = await call(gitea, "POST", f"/v2/{REPO}/blobs/uploads/", reader)
    assert denied.status == 401 and denied.body == b"reqPackageAccess\n"
    anon = await call(gitea, "POST", f"/v2/{REPO}/blobs/uploads/")
    assert anon.status == 401 and f"repository:{REPO}:pull,push" in anon.headers.get("Www-Authenticate")


async def test_add_image_is_deterministic(clock):
    a, b = Gitea(ROOT, [], clock=clock), Gitea("https://other.test", [], clock=clock)
    assert a.add_image(REPO, "latest") == b.add_image(REPO, "latest") != a.add_image(REPO, "v1")
    assert a.has_manifest(REPO, "missing") is None


async def test_other_paths(gitea):
    ui = await call(gitea, "GET", "/explore/repos")
    assert ui.status == 200 and b"Gitea" in ui.body
    resp = await call(gitea, "GET", "/v2/_catalog", basic("reader", "tok-read"))
    assert resp.status == 404 and errors(resp)[0]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("version,headers,realm", [
    # up to 1.22.0: ROOT_URL, whatever the request says (the guide's world)
    ("1.22.0", {"X-Forwarded-Proto": "http", "Host": "registry.bto.bar"}, f"{ROOT}v2/token"),
    # 1.22.1-1.25: the request's Host when X-Forwarded-Proto is there, else ROOT_URL
    ("1.22.1", {"X-Forwarded-Proto": "https", "Host": "registry.bto.bar"}, "https://registry.bto.bar/v2/token"),
    ("1.25.5", {"X-Forwarded-Proto": "http", "Host": "registry.bto.bar"}, "http://registry.bto.bar/v2/token"),
    ("1.25.5", {"Host": "gitea-http.gitea-system.svc.cluster.local:3000"}, f"{ROOT}v2/token"),
    # 1.26+: the Host always (what a real Gitea 1.26.0 answered in tests/real/test_gitea_real.py)
    ("1.26.0", {"Host": "gitea-http.gitea-system.svc.cluster.local:3000"},
     "http://gitea-http.gitea-system.svc.cluster.local:3000/v2/token"),
    ("1.26.0", {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "elsewhere.test", "Host": "registry.bto.bar"},
     "https://registry.bto.bar/v2/token"),
])
async def test_the_realm_follows_the_gitea_version(clock, version, headers, realm):
    g = Gitea(ROOT, [GiteaUser("registry-user", "tok-push", can_push={"jaybrto"})], clock=clock, version=version)
    internal = "svc.cluster.local" in headers["Host"]  # a pod straight to the Service: plain HTTP
    resp = await call(g, "GET", "/v2/", host=f"http://{headers['Host']}" if internal else REG,
                      **{k.replace("-", "_"): v for k, v in headers.items()})
    assert resp.status == 401
    assert resp.headers.get("Www-Authenticate").startswith(f'Bearer realm="{realm}",')


def test_a_gitea_version_must_look_like_one():
    from sandbox.gitea import parse_version
    assert parse_version("v1.22.1") == (1, 22, 1) and parse_version("1.26.0+rc1") == (1, 26, 0)
    for bad in ("1.22", "latest", "1.22.1; rm -rf /", ""):
        with pytest.raises(ValueError):
            parse_version(bad)
