"""The sandbox's GHCR, as a registry client on this machine meets it: through real HTTPS, never through DNS.

Everything goes through ``ghcr.io:PORT`` (the world's one port) with the sandbox's explicit name
mapping (``ghcr-resolve``) and the root its certificate chains to (``public-ca.crt``); a wrapped
``getaddrinfo`` proves that ``ghcr.io`` and its storage host are never looked up.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from urllib.parse import urljoin

import httpx
import pytest

from wizard import netclient

ORG = "jaybrto"
ALL_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from helpers import fast_options

    from sandbox.server import Sandbox
    sb = Sandbox(tmp_path_factory.mktemp("ghcr"), fast_options()).start()
    yield sb
    sb.stop()


@pytest.fixture
def lookups(monkeypatch):
    """Every name handed to the system resolver during the test."""
    seen: list[str] = []
    real = socket.getaddrinfo

    def spy(host, *args, **kw):
        seen.append(host.decode() if isinstance(host, bytes) else str(host))
        return real(host, *args, **kw)
    monkeypatch.setattr(socket, "getaddrinfo", spy)
    return seen


@pytest.fixture
def http(world):
    resolve = (world.dir / "ghcr-resolve").read_text().split()
    with netclient.client(resolve, ca_file=str(world.dir / "public-ca.crt")) as c:
        yield c


def state(world) -> dict:
    return httpx.get(f"{world.api_url}/_sandbox/state", verify=False, timeout=5).json()


def token(http, world, repo: str, pat: str | None = None) -> httpx.Response:
    auth = ("jaybrto", pat) if pat else None
    return http.get(f"{world.ghcr_url}/token", params={"scope": f"repository:{repo}:pull", "service": "ghcr.io"},
                    auth=auth)


def bearer(http, world, repo: str, pat: str | None = None) -> dict:
    resp = token(http, world, repo, pat)
    assert resp.status_code == 200, resp.text
    assert list(resp.json()) == ["token"]  # GHCR sends no expires_in
    return {"Authorization": "Bearer " + resp.json()["token"]}


def manifest(http, world, repo: str, ref: str, headers: dict, accept: str = ALL_TYPES) -> httpx.Response:
    return http.get(f"{world.ghcr_url}/v2/{repo}/manifests/{ref}", headers={**headers, "Accept": accept})


def test_public_image_pulls_anonymously_and_ghcr_is_never_looked_up(world, http, lookups):
    base = http.get(f"{world.ghcr_url}/v2/")
    assert base.status_code == 401
    assert base.headers["www-authenticate"] == (
        f'Bearer realm="{world.ghcr_url}/token",service="ghcr.io",scope="repository:user/image:pull"')
    repo = f"{ORG}/gwa-webhook"
    unauth = manifest(http, world, repo, "latest", {})
    assert unauth.status_code == 401 and unauth.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert f'scope="repository:{repo}:pull"' in unauth.headers["www-authenticate"]
    resp = manifest(http, world, repo, "latest", bearer(http, world, repo))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    digest = "sha256:" + hashlib.sha256(resp.content).hexdigest()
    assert resp.headers["docker-content-digest"] == digest
    assert state(world)["registries"]["ghcr"][f"{repo}:latest"] == digest
    ghcr_lookups = [h for h in lookups if "ghcr.io" in h or "githubusercontent" in h]
    assert ghcr_lookups == [], f"looked up in DNS: {ghcr_lookups}"


def test_private_package_needs_the_pat(world, http):
    repo = f"{ORG}/github-workflow-agents"
    anon = token(http, world, repo)
    assert anon.status_code == 401  # an anonymous token for a private package is refused
    wrong = token(http, world, repo, "ghp_" + "0" * 36)
    assert wrong.status_code == 401
    pat = (world.dir / "ghcr-token").read_text().strip()
    assert (world.dir / "ghcr-token").stat().st_mode & 0o777 == 0o600
    resp = manifest(http, world, repo, "latest", bearer(http, world, repo, pat))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/vnd.docker.distribution.manifest.v2+json"
    # a token for another package does not open this one
    other = bearer(http, world, f"{ORG}/gwa-webhook")
    assert manifest(http, world, repo, "latest", other).status_code == 403


def test_the_cluster_pull_secret_holds_the_same_pat(world):
    from kubernetes import client

    from wizard.kube import api_client
    api = api_client(str(world.kubeconfig))
    try:
        sec = client.CoreV1Api(api).read_namespaced_secret("ghcr-secret", "default")
    finally:
        api.close()
    cfg = json.loads(base64.b64decode(sec.data[".dockerconfigjson"]))
    assert cfg["auths"]["ghcr.io"]["password"] == (world.dir / "ghcr-token").read_text().strip()


def test_index_with_two_platforms_and_attestations(world, http):
    repo = f"{ORG}/gwa-orchestrator"
    auth = bearer(http, world, repo)
    resp = manifest(http, world, repo, "latest", auth)
    assert resp.headers["content-type"] == "application/vnd.oci.image.index.v1+json"
    index = resp.json()
    platforms = [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]]
    assert platforms == [("linux", "amd64"), ("linux", "arm64"), ("unknown", "unknown"), ("unknown", "unknown")]
    subjects = {m["annotations"]["vnd.docker.reference.digest"] for m in index["manifests"][2:]}
    assert subjects == {m["digest"] for m in index["manifests"][:2]}
    for m in index["manifests"]:
        child = manifest(http, world, repo, m["digest"], auth)
        assert child.status_code == 200 and child.headers["content-type"] == m["mediaType"]
        assert "sha256:" + hashlib.sha256(child.content).hexdigest() == m["digest"]
        assert len(child.content) == m["size"]
    narrow = manifest(http, world, repo, "latest", auth, accept="application/vnd.oci.image.manifest.v1+json")
    assert narrow.status_code == 404 and narrow.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    legacy = manifest(http, world, f"{ORG}/gwa-webhook", "legacy", bearer(http, world, f"{ORG}/gwa-webhook"))
    assert legacy.headers["content-type"] == "application/vnd.docker.distribution.manifest.list.v2+json"


def layers(http, world, repo: str, ref: str, auth: dict, platform: int | None = None) -> list[str]:
    doc = manifest(http, world, repo, ref, auth).json()
    if platform is not None:
        doc = manifest(http, world, repo, doc["manifests"][platform]["digest"], auth).json()
    return [x["digest"] for x in doc["layers"]]


def test_one_large_layer_is_shared_between_images(world, http):
    pat = (world.dir / "ghcr-token").read_text().strip()
    agents = layers(http, world, f"{ORG}/github-workflow-agents", "latest",
                    bearer(http, world, f"{ORG}/github-workflow-agents", pat))
    orch = layers(http, world, f"{ORG}/gwa-orchestrator", "latest", bearer(http, world, f"{ORG}/gwa-orchestrator"), 0)
    hook = layers(http, world, f"{ORG}/gwa-webhook", "latest", bearer(http, world, f"{ORG}/gwa-webhook"))
    assert agents[0] == orch[0] == hook[0]
    assert len({agents[1], orch[1], hook[1]}) == 3


def test_blob_get_redirects_to_storage_that_refuses_head_and_expires(world, http):
    repo = f"{ORG}/gwa-webhook"
    auth = bearer(http, world, repo)
    digest = layers(http, world, repo, "latest", auth)[0]
    url = f"{world.ghcr_url}/v2/{repo}/blobs/{digest}"
    head = http.head(url, headers=auth)
    assert head.status_code == 200 and head.headers["docker-content-digest"] == digest
    resp = http.get(url, headers=auth)
    assert resp.status_code == 307
    location = resp.headers["location"]
    assert location.startswith(f"https://pkg-containers.githubusercontent.com:{world.opts.public_port}/")
    blob = http.get(location)  # no Authorization: the storage URL is signed
    assert blob.status_code == 200
    assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == digest
    assert len(blob.content) == world.opts.ghcr_layer_size
    assert http.head(location).status_code == 403
    tampered = location.replace("se=", "se=9")
    assert http.get(tampered).status_code == 403
    ttl = world.cluster.ghcr.url_ttl
    httpx.post(f"{world.api_url}/_sandbox/registries", json={"ghcr_url_ttl": 0}, verify=False)
    try:
        stale = http.get(http.get(url, headers=auth).headers["location"])
        assert stale.status_code == 403 and b"AuthenticationFailed" in stale.content
    finally:
        httpx.post(f"{world.api_url}/_sandbox/registries", json={"ghcr_url_ttl": ttl}, verify=False)
    fresh = http.get(http.get(url, headers=auth).headers["location"])  # asking the registry again works
    assert fresh.status_code == 200


def test_tag_list_paginates_with_link(world, http):
    repo = f"{ORG}/github-workflow-agents"
    auth = bearer(http, world, repo, (world.dir / "ghcr-token").read_text().strip())
    everything = http.get(f"{world.ghcr_url}/v2/{repo}/tags/list", headers=auth).json()["tags"]
    assert "latest" in everything and len(everything) > 10
    url, pages, seen = f"{world.ghcr_url}/v2/{repo}/tags/list?n=5", 0, []
    while url:
        resp = http.get(url, headers=auth)
        assert resp.status_code == 200
        page = resp.json()["tags"]
        assert len(page) <= 5
        seen += page
        pages += 1
        link = resp.headers.get("link")
        url = urljoin(url, link.split(";")[0].strip("<> ")) if link else None
        assert pages < 10
    assert seen == sorted(everything) and pages == -(-len(everything) // 5)
    assert 'rel="next"' not in resp.headers.get("link", "")
    past = http.get(f"{world.ghcr_url}/v2/{repo}/tags/list", params={"n": 5, "last": seen[-1]}, headers=auth)
    assert past.json()["tags"] == [] and "link" not in past.headers
    assert sorted(k.split(":", 1)[1] for k in state(world)["registries"]["ghcr"] if k.startswith(repo + ":")) == seen


def test_rate_limit_answers_429_with_retry_after(world, http):
    repo = f"{ORG}/gwa-webhook"
    auth = bearer(http, world, repo)
    r = httpx.post(f"{world.api_url}/_sandbox/registries", json={"ghcr_throttle": 2, "ghcr_retry_after": 3},
                   verify=False)
    assert r.json()["ghcr_throttle"] == 2
    for _ in range(2):
        resp = manifest(http, world, repo, "latest", auth)
        assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
        err = resp.json()["errors"][0]
        assert err["code"] == "TOOMANYREQUESTS" and err["message"].startswith("retry-after: ")
    assert manifest(http, world, repo, "latest", auth).status_code == 200


def test_pods_run_the_ghcr_digests(world):
    """The nodes pull ghcr.io images from this GHCR: a pod's imageID is the digest GHCR serves for its tag."""
    from helpers import poll
    from kubernetes import client

    from wizard.kube import api_client
    api = api_client(str(world.kubeconfig))
    try:
        def running():
            pods = client.CoreV1Api(api).list_namespaced_pod("default").items
            ids = {p.status.container_statuses[0].image_id for p in pods
                   if p.status.container_statuses and p.status.container_statuses[0].image_id}
            return ids if len(ids) == 3 else None
        ids = poll(running, timeout=20, what="the three workloads' imageIDs")
    finally:
        api.close()
    ghcr = state(world)["registries"]["ghcr"]
    assert ids == {f"ghcr.io/{ORG}/{n}@{ghcr[f'{ORG}/{n}:latest']}"
                   for n in ("github-workflow-agents", "gwa-orchestrator", "gwa-webhook")}


def test_signature_fallback_tag_and_no_referrers_api(world, http):
    repo = f"{ORG}/gwa-webhook"
    auth = bearer(http, world, repo)
    latest = manifest(http, world, repo, "latest", auth).headers["docker-content-digest"]
    tags = http.get(f"{world.ghcr_url}/v2/{repo}/tags/list", headers=auth).json()["tags"]
    sig_tag = f"sha256-{latest.split(':', 1)[1]}.sig"
    assert sig_tag in tags
    sig = manifest(http, world, repo, sig_tag, auth).json()
    assert sig["layers"][0]["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = http.get(http.get(f"{world.ghcr_url}/v2/{repo}/blobs/{sig['layers'][0]['digest']}",
                                headers=auth).headers["location"]).json()
    assert payload["critical"]["image"]["docker-manifest-digest"] == latest
    referrers = http.get(f"{world.ghcr_url}/v2/{repo}/referrers/{latest}", headers=auth)
    assert referrers.status_code == 404  # like GHCR: copy the fallback tags instead


def test_every_sandbox_has_the_same_digests(world, tmp_path):
    from helpers import fast_options

    from sandbox.server import Sandbox
    with Sandbox(tmp_path / "again", fast_options(seed=7)) as other:
        assert state(other)["registries"]["ghcr"] == state(world)["registries"]["ghcr"]
