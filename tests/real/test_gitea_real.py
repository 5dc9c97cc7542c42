"""The wizard against a real Gitea (built from code.gitea.io/gitea by scripts/build-real), behind real nginx.

Two kinds of test. The first records what this Gitea version really answers — the facts our model and the
wizard's diagnoses are held to (docs/sandbox.md lists where the model differs). The second walks the
wizard's auth-flow probe and real skopeo through the same nginx to the same Gitea: they must agree, and
skopeo's error must be diagnosed as the entry the probe named.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import urllib.error
import urllib.request

import pytest
from helpers import require_components
from real.stack import READER, REGISTRY_HOST, REPO, WRITER, Stack
from real.test_authflow_real import probe

from sandbox.gitea import Gitea as GiteaModel
from sandbox.http import Headers, HttpRequest
from wizard.diagnose import classify

# scripts/build-real's binaries and their versions: the current release, and one before 1.22.1 (the realm is
# ROOT_URL + v2/token there, whatever the request says) — every test here runs on both
VERSIONS = {"gitea": "1.26.0", "gitea-1.21": "1.21.11"}
GITEA_VERSION = VERSIONS["gitea"]


@pytest.fixture(scope="module", params=list(VERSIONS))
def gitea_stack(real_binaries, request):
    require_components(request.param)
    st = Stack(real_binaries, gitea=request.param)
    try:
        st.start()
        seeded = st.skopeo_copy(WRITER, st.tokens[WRITER])
        assert seeded.ok, f"pushing the seed image to real Gitea failed: {seeded.stderr}"
        yield st
    finally:
        st.stop()
        assert st.gitea.proc is None


def raw(st: Stack, method: str, path: str, *, auth: tuple[str, str] | None = None, host: str | None = None,
        proto: str | None = "https") -> tuple[int, dict, bytes]:
    """One request straight to Gitea with the headers nginx sends (Host, X-Forwarded-Proto)."""
    headers = {"Host": host or st.registry}
    if proto:
        headers["X-Forwarded-Proto"] = proto
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(st.gitea.url + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): r.headers.get_all(k) for k in r.headers}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): e.headers.get_all(k) for k in e.headers}, e.read()


# ------------------------------------------------------------------ what this Gitea version answers
def version_of(st: Stack) -> str:
    return VERSIONS[st.gitea.binary_name]


def test_the_version_is_the_one_built(gitea_stack):
    assert gitea_stack.gitea.version() == version_of(gitea_stack)


def test_the_realm_is_what_the_model_of_this_version_names(gitea_stack):
    """Gitea >= 1.22.1 (1.26: PUBLIC_URL_DETECTION=auto) derives the realm from the request: scheme from
    X-Forwarded-Proto, host from Host. Up to 1.22.0 it is ROOT_URL + v2/token whatever the request says.
    Real Gitea of each version and our model of that version (sandbox/gitea.py) name the same realm."""
    st = gitea_stack
    assert st.gitea.root_url == st.root_url and "auth.test" in st.root_url
    internal = "gitea-http.gitea-system.svc.cluster.local:3000"  # Kaniko's view, without a proxy in between
    if version_of(st) == GITEA_VERSION:
        cases = {("https", st.registry): f"https://{st.registry}/v2/token",
                 ("http", st.registry): f"http://{st.registry}/v2/token",  # Traefik web rewrote X-Forwarded-Proto
                 (None, internal): f"http://{internal}/v2/token"}
    else:  # the guide's era: one realm for every vantage point
        cases = dict.fromkeys([("https", st.registry), ("http", st.registry), (None, internal)], st.realm)
    model = GiteaModel(st.root_url, [], version=version_of(st))
    for (proto, host), realm in cases.items():
        code, headers, body = raw(st, "GET", "/v2/", host=host, proto=proto)
        assert code == 401
        challenges = headers["www-authenticate"]
        assert challenges[0] == f'Bearer realm="{realm}",service="container_registry",scope="*"', challenges
        # 1.26 adds a second challenge (parse both); 1.21 sends the Bearer one only, as the model does
        assert challenges[1:] == (['Basic realm="Gitea Container Registry"'] if version_of(st) == GITEA_VERSION
                                  else []), challenges
        assert json.loads(body) == {"errors": [{"code": "UNAUTHORIZED", "message": ""}]}
        sent = Headers([("Host", host)] + ([("X-Forwarded-Proto", proto)] if proto else []))
        assert model.realm_for(HttpRequest("GET", f"http://{host}/v2/", sent)) == realm, (proto, host)


def test_the_token_endpoint_answers_get_only_and_401_to_wrong_credentials(gitea_stack):
    st = gitea_stack
    q = "/v2/token?scope=repository:acme/app:pull&service=container_registry"
    code, _, body = raw(st, "GET", q, auth=(WRITER, st.tokens[WRITER]))
    assert code == 200 and "token" in json.loads(body)
    code, _, body = raw(st, "POST", q, auth=(WRITER, st.tokens[WRITER]))
    assert code == 404 and body == b""  # containerd tries POST first and falls back to GET on 404
    code, headers, body = raw(st, "GET", q, auth=(WRITER, "not-the-token"))
    model = GiteaModel(st.root_url, [], version=version_of(st))
    sent = Headers([("Host", st.registry), ("Authorization", "Basic " + base64.b64encode(
        f"{WRITER}:not-the-token".encode()).decode())])
    want = asyncio.run(model.handle(HttpRequest("GET", f"http://{st.registry}{q}", sent)))
    # the model of this version answers as this Gitea does: 1.21 its auth group's error in plain text (no
    # challenge), 1.26 the registry's JSON error with its Bearer challenge
    ctype = headers["content-type"][0]
    read = (lambda b: json.loads(b)) if ctype == "application/json" else (lambda b: b)  # noqa: E731
    assert (code, ctype, read(body)) == (401, want.headers.get("Content-Type"), read(want.body))
    if version_of(st) == GITEA_VERSION:
        assert json.loads(body) == {"errors": [{"code": "UNAUTHORIZED", "message": ""}]}
        assert headers["www-authenticate"][0].startswith("Bearer realm=")
    else:
        assert body == b"authGroup.Verify\n" and "www-authenticate" not in headers
    # the user name is ignored when the password is a token: another name with the writer's token works
    code, _, _ = raw(st, "GET", q, auth=("someone-else", st.tokens[WRITER]))
    assert code == 200


def test_a_private_owner_gives_no_anonymous_pull(gitea_stack):
    st = gitea_stack
    code, _, body = raw(st, "GET", "/v2/token?scope=repository:acme/app:pull")
    assert code == 200, "Gitea hands out an anonymous (ghost) token"
    token = json.loads(body)["token"]
    req = urllib.request.Request(f"{st.gitea.url}/v2/{REPO}/manifests/latest", method="HEAD",
                                 headers={"Host": st.registry, "X-Forwarded-Proto": "https",
                                          "Authorization": f"Bearer {token}",
                                          "Accept": "application/vnd.oci.image.manifest.v1+json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code in (401, 404)


# ------------------------------------------------------------------ the wizard's probe vs skopeo, on real Gitea
SCENARIOS = [
    ("good credentials", WRITER, None, False, True, "ok"),
    ("good credentials pushing", WRITER, None, True, True, "ok"),
    ("wrong password", WRITER, "not-the-token", False, True, "wrong-token"),
    ("read-only user pushing", READER, None, True, True, "pull-only-token"),
    ("untrusted CA", WRITER, None, False, False, "unknown-authority"),
]


@pytest.mark.parametrize("name,user,password,push,trust,verdict", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_probe_verdict_agrees_with_skopeo_on_real_gitea(gitea_stack, name, user, password, push, trust, verdict):
    st = gitea_stack
    password = st.tokens[user] if password is None else password
    flow = probe(st, user, password, push=push, trust=trust)
    if push:
        sk = st.skopeo("copy", "--dest-creds", f"{user}:{password}", "--dest-cert-dir", "{certs}",
                       f"oci:{st.dir / 'layout'}:latest", f"docker://{st.registry}/{REPO}:pushed", trust=trust)
    else:
        sk = st.skopeo("inspect", "--creds", f"{user}:{password}", "--cert-dir", "{certs}",
                       f"docker://{st.registry}/{REPO}:latest", trust=trust)
    context = f"probe: {flow.verdict} ({flow.cause}); skopeo exit {sk.rc}: {sk.stderr.strip()[-400:]}"
    assert flow.verdict == verdict, context
    assert sk.ok == flow.ok, "the probe and skopeo disagree — " + context
    if flow.ok:
        # 1.26 names the registry host itself (derived from the request), and that is fine; 1.21 ROOT_URL's
        want = f"https://{st.registry}/v2/token" if version_of(st) == GITEA_VERSION else st.realm
        assert flow.realm == want, flow.realm
    else:
        d = classify(sk.stderr)
        assert d is not None and d.key == flow.problem, \
            f"skopeo's error is diagnosed as {d.key if d else None}, the probe said {flow.problem}: {context}"


def test_gitea_tokens_never_reach_the_probe_evidence(gitea_stack):
    st = gitea_stack
    flow = probe(st, WRITER, st.tokens[WRITER], push=True)
    text = json.dumps(flow.evidence())
    assert flow.ok and st.tokens[WRITER] not in text
    assert REGISTRY_HOST in text


# ------------------------------------------------------------------ crane beside skopeo, on real Gitea
def test_crane_and_skopeo_read_the_same_digest_manifest_and_tags_from_real_gitea(gitea_stack):
    """Two independent clients agree on what real Gitea holds: the digest, the manifest bytes, the tag list.
    The reader's token may read too; crane's catalog is what this Gitea version answers to /v2/_catalog."""
    st = gitea_stack
    ref = f"{st.registry}/{REPO}:latest"
    sk = st.skopeo("inspect", "--raw", "--creds", f"{WRITER}:{st.tokens[WRITER]}", "--cert-dir", "{certs}",
                   f"docker://{ref}")
    assert sk.ok, sk.stderr
    want = "sha256:" + hashlib.sha256(sk.stdout.encode("utf-8", "surrogateescape")).hexdigest()
    for user in (WRITER, READER):
        digest = st.crane("digest", ref, user=user)
        assert digest.ok and digest.stdout.strip() == want, (user, digest)
    manifest = st.crane("manifest", ref)
    assert manifest.ok and manifest.stdout == sk.stdout
    tags = st.skopeo("list-tags", "--creds", f"{WRITER}:{st.tokens[WRITER]}", "--cert-dir", "{certs}",
                     f"docker://{st.registry}/{REPO}")
    assert tags.ok, tags.stderr
    listed = st.crane("ls", f"{st.registry}/{REPO}")
    have = sorted(json.loads(tags.stdout)["Tags"])  # the seed's latest, and what earlier tests pushed
    assert listed.ok and sorted(listed.stdout.split()) == have and "latest" in have, (listed, have)
    catalog = st.crane("catalog", st.registry)
    assert catalog.ok and REPO in catalog.stdout.split(), catalog
