"""Gitea's upload rules, as a pushing client meets them through Caddy and Traefik, and an empty Gitea's pulls.

The sandbox here starts WITHOUT the migrated images (``gitea_preloaded=False``, the issue's
default once the Images stage exists). Requests go over real HTTPS to ``registry.example.test:PORT``
with the plan's ``network.resolve`` and ``registry.ca_file``, Basic auth with the sandbox's tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import threading

import httpx
import pytest
import yaml
from helpers import poll, require_binary

from wizard import netclient

ORG = "jaybrto"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def sb(tmp_path_factory):
    from helpers import fast_options

    from sandbox.server import Sandbox, free_port
    port = free_port()
    # the nodes already trust (skip-verify) the registry host: pulls depend only on what Gitea holds
    existing = yaml.safe_dump({"configs": {f"registry.example.test:{port}": {"tls": {"insecure_skip_verify": True}}}})
    sandbox = Sandbox(tmp_path_factory.mktemp("uploads"), fast_options(
        gitea_preloaded=False, public_port=port, existing_registries=existing)).start()
    yield sandbox
    sandbox.stop()


class Reg:
    """A registry client for one user on the external registry host."""

    def __init__(self, sb, user: str, token: str):
        plan = yaml.safe_load(sb.plan.read_text())
        self.base = f"https://{plan['registry']['host']}"
        self.client = netclient.client(plan["network"]["resolve"], ca_file=plan["registry"]["ca_file"])
        self.auth = (user, token)

    def req(self, method: str, path: str, **kw) -> httpx.Response:
        url = path if path.startswith("https://") else self.base + path
        return self.client.request(method, url, auth=self.auth, **kw)

    def start(self, repo: str, **params) -> httpx.Response:
        return self.req("POST", f"/v2/{repo}/blobs/uploads/", params=params)

    def push_blob(self, repo: str, data: bytes) -> str:
        started = self.start(repo)
        assert started.status_code == 202, started.text
        put = self.req("PUT", started.headers["location"], params={"digest": sha(data)}, content=data)
        assert put.status_code == 201, put.text
        return sha(data)

    def put_manifest(self, repo: str, ref: str, doc: dict | bytes, media_type: str = OCI_MANIFEST) -> httpx.Response:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        return self.req("PUT", f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type})

    def image(self, repo: str, tag: str, payload: bytes) -> tuple[str, int]:
        config, layer = self.push_blob(repo, b'{"os":"linux"}'), self.push_blob(repo, payload)
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 14},
               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer,
                           "size": len(payload)}]}
        resp = self.put_manifest(repo, tag, doc)
        assert resp.status_code == 201, resp.text
        return resp.headers["docker-content-digest"], len(json.dumps(doc))


@pytest.fixture(scope="module")
def pusher(sb):
    r = Reg(sb, "registry-user", sb.token_file.read_text().strip())
    yield r
    r.client.close()


@pytest.fixture(scope="module")
def reader(sb):
    r = Reg(sb, "ci-reader", (sb.dir / "reader-token").read_text().strip())
    yield r
    r.client.close()


def errors(resp: httpx.Response) -> list[dict]:
    return resp.json()["errors"]


def state(sb) -> dict:
    return httpx.get(f"{sb.api_url}/_sandbox/state", verify=False, timeout=5).json()


def test_gitea_starts_empty_when_not_preloaded(sb, pusher):
    registries = state(sb)["registries"]
    assert f"{ORG}/gwa-webhook:latest" in registries["ghcr"]
    assert not any(k.startswith(f"{ORG}/") for k in registries["gitea"])
    assert pusher.req("HEAD", f"/v2/{ORG}/gwa-webhook/manifests/latest").status_code == 404


def test_blobs_are_scoped_per_image_and_mount_checks_access(pusher, reader):
    data = secrets.token_bytes(300)
    digest = pusher.push_blob(f"{ORG}/scoped-a", data)
    assert pusher.req("GET", f"/v2/{ORG}/scoped-a/blobs/{digest}").content == data
    other = pusher.req("HEAD", f"/v2/{ORG}/scoped-b/blobs/{digest}")
    assert other.status_code == 404  # the same digest, another image: not there
    mounted = pusher.start(f"{ORG}/scoped-b", mount=digest, **{"from": f"{ORG}/scoped-a"})
    assert mounted.status_code == 201 and mounted.headers["docker-content-digest"] == digest
    assert pusher.req("GET", f"/v2/{ORG}/scoped-b/blobs/{digest}").content == data
    # ci-reader may push to its own namespace and pull from jaybrto, but not read registry-user's own images
    private = pusher.push_blob("registry-user/private", data)
    denied = reader.start("ci-reader/app", mount=private, **{"from": "registry-user/private"})
    assert denied.status_code == 202  # no access to the source: an ordinary upload session instead
    assert reader.req("HEAD", f"/v2/ci-reader/app/blobs/{private}").status_code == 404
    assert reader.req("DELETE", denied.headers["location"]).status_code == 204
    allowed = reader.start("ci-reader/app", mount=digest, **{"from": f"{ORG}/scoped-a"})
    assert allowed.status_code == 201
    missing = pusher.start(f"{ORG}/scoped-b", mount=sha(b"never pushed"), **{"from": f"{ORG}/scoped-a"})
    assert missing.status_code == 202


def test_chunked_upload_needs_content_range_after_the_first_patch(pusher):
    repo = f"{ORG}/chunked"
    data = secrets.token_bytes(1000)
    loc = pusher.start(repo).headers["location"]
    first = pusher.req("PATCH", loc, content=data[:400])  # the first write may be a stream
    assert first.status_code == 202 and first.headers["range"] == "0-399"
    loc = first.headers["location"]
    stream = pusher.req("PATCH", loc, content=data[400:700])
    assert stream.status_code == 400
    assert errors(stream)[0] == {"code": "BLOB_UPLOAD_INVALID", "message": "Stream uploads after first write are not allowed"}
    wrong = pusher.req("PATCH", loc, content=data[400:700], headers={"Content-Range": "300-599"})
    assert wrong.status_code == 416
    right = pusher.req("PATCH", loc, content=data[400:700], headers={"Content-Range": "400-699"})
    assert right.status_code == 202 and right.headers["range"] == "0-699"
    done = pusher.req("PUT", loc, params={"digest": sha(data)}, content=data[700:],
                      headers={"Content-Range": "700-999"})
    assert done.status_code == 201
    assert pusher.req("GET", f"/v2/{repo}/blobs/{sha(data)}").content == data


def test_digest_is_verified(pusher):
    repo = f"{ORG}/digests"
    data, liar = b"the real bytes", sha(b"other bytes")
    put = pusher.req("PUT", pusher.start(repo).headers["location"], params={"digest": liar}, content=data)
    assert put.status_code == 400 and errors(put)[0]["code"] == "DIGEST_INVALID"
    mono = pusher.start(repo, digest=liar)
    assert mono.status_code == 400 and errors(mono)[0]["code"] == "DIGEST_INVALID"
    assert pusher.req("HEAD", f"/v2/{repo}/blobs/{liar}").status_code == 404
    man = pusher.put_manifest(repo, sha(b"not this"), {"schemaVersion": 2, "config": {}, "layers": []})
    assert man.status_code == 400 and errors(man)[0]["code"] == "DIGEST_INVALID"


def test_manifest_put_needs_its_blobs_and_children_in_the_same_image(pusher):
    repo = f"{ORG}/refs"
    missing = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(b"{}"), "size": 2},
               "layers": []}
    resp = pusher.put_manifest(repo, "v1", missing)
    assert resp.status_code == 404 and errors(resp)[0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    child, size = pusher.image(f"{ORG}/refs-elsewhere", "v1", b"layer")  # pushed to ANOTHER image
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child, "size": size,
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    resp = pusher.put_manifest(repo, "v1", index, OCI_INDEX)
    assert resp.status_code == 404 and errors(resp)[0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    child, size = pusher.image(repo, "child", b"layer")
    index["manifests"][0]["digest"] = child
    resp = pusher.put_manifest(repo, "v1", index, OCI_INDEX)
    assert resp.status_code == 201
    nested = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_INDEX, "digest": resp.headers["docker-content-digest"], "size": len(json.dumps(index))}]}
    resp = pusher.put_manifest(repo, "nested", nested, OCI_INDEX)
    assert resp.status_code == 400 and errors(resp)[0]["code"] == "MANIFEST_INVALID"
    assert pusher.req("HEAD", f"/v2/{repo}/manifests/nested").status_code == 404


def test_tags_are_stored_lowercase(sb, pusher):
    repo = f"{ORG}/cased"
    digest, _ = pusher.image(repo, "Release-1", b"one")
    assert pusher.req("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["release-1"]
    for ref in ("release-1", "RELEASE-1"):
        assert pusher.req("HEAD", f"/v2/{repo}/manifests/{ref}").headers["docker-content-digest"] == digest
    other, _ = pusher.image(repo, "release-1", b"two")  # differs only in case: the same tag, replaced
    assert pusher.req("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["release-1"]
    assert state(sb)["registries"]["gitea"][f"{repo}:release-1"] == other != digest
    upper = pusher.start(f"{ORG}/UPPER")
    assert upper.status_code == 400 and errors(upper)[0]["code"] == "NAME_INVALID"


def test_concurrent_manifest_puts_can_collide(sb, pusher):
    repo = f"{ORG}/racy"
    docs = []
    for i in range(2):
        config, layer = pusher.push_blob(repo, b'{"os":"linux"}'), pusher.push_blob(repo, f"layer {i}".encode())
        docs.append({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                     "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 14},
                     "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer,
                                 "size": 7}]})
    switch = f"{sb.api_url}/_sandbox/registries"
    assert httpx.post(switch, json={"gitea_duplicate_key": True}, verify=False).json()["gitea_duplicate_key"]
    try:
        results: list[httpx.Response] = []
        clients = [Reg(sb, "registry-user", sb.token_file.read_text().strip()) for _ in docs]
        for c in clients:  # connected before the race, so both PUTs arrive together
            assert c.req("GET", "/v2/").status_code == 200
        gate = threading.Barrier(len(docs))

        def put(c, i):
            gate.wait()
            results.append(c.put_manifest(repo, f"v{i}", docs[i]))
        threads = [threading.Thread(target=put, args=(c, i)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(r.status_code for r in results) == [201, 500]
        failed = next(r for r in results if r.status_code == 500)
        assert "duplicate key" in errors(failed)[0]["message"]
        assert clients[0].put_manifest(repo, "again", docs[0]).status_code == 201  # one at a time works
        for c in clients:
            c.client.close()
    finally:
        httpx.post(switch, json={"gitea_duplicate_key": False}, verify=False)


# ---------------------------------------------------------------------------------------------- pulls
def realm_tls_ingress(sb, k8s_api) -> None:
    from kubernetes import client
    host = "gitea.k3s.example.test"
    client.NetworkingV1Api(k8s_api).create_namespaced_ingress("gitea-system", {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "realm-tls", "annotations": {
            "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
            "traefik.ingress.kubernetes.io/router.tls": "true"}},
        "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
            "service": {"name": "gitea-http", "port": {"number": 3000}}}}]}}]}})


def skopeo(sb, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """skopeo in its own mount namespace with a private /etc/hosts and a dead resolver (tests/real/stack.py's way)."""
    unshare, binary = require_binary("unshare"), require_binary("skopeo")
    box = sb.dir / f"skopeo-{secrets.token_hex(3)}"
    certs = box / "certs"
    certs.mkdir(parents=True)
    (box / "home").mkdir()
    (certs / "public-ca.crt").write_bytes((sb.dir / "public-ca.crt").read_bytes())
    hosts = box / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {h}\n" for h in (
        "ghcr.io", "pkg-containers.githubusercontent.com", "registry.example.test", "gitea.k3s.example.test")))
    resolv = box / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    (box / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    (box / "registries.conf").write_text("")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(box / "home"), "XDG_RUNTIME_DIR": str(box),
           "REGISTRY_AUTH_FILE": str(box / "auth.json"), "LANG": "C",
           "CONTAINERS_REGISTRIES_CONF": str(box / "registries.conf")}
    script = 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"'
    argv = [unshare, "-m", "--propagation", "private", "--", "sh", "-c", script, "sh", str(hosts), str(resolv),
            binary, "--policy", str(box / "policy.json"), "--tmpdir", str(box),
            *[a.replace("{certs}", str(certs)) for a in args]]
    if os.geteuid() != 0:
        pytest.skip("skopeo runs in its own mount namespace: needs root")
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def test_pull_from_an_empty_gitea_backs_off_until_skopeo_copies_the_image(sb):
    """A pod on an image Gitea lacks stays in ImagePullBackOff; once a real client copies it (skopeo
    --all --preserve-digests through Gitea's upload rules), the pod runs the GHCR digest."""
    from kubernetes import client

    from wizard.kube import api_client
    plan = yaml.safe_load(sb.plan.read_text())
    registry, port = plan["registry"]["host"], sb.opts.public_port
    name = f"{ORG}/gwa-orchestrator"
    api = api_client(str(sb.kubeconfig))
    core = client.CoreV1Api(api)
    try:
        realm_tls_ingress(sb, api)
        auth = {"auths": {registry: {"username": "registry-user", "password": sb.token_file.read_text().strip()}}}
        core.create_namespaced_secret("default", {"metadata": {"name": "gitea-pull"},
                                                  "type": "kubernetes.io/dockerconfigjson",
                                                  "stringData": {".dockerconfigjson": json.dumps(auth)}})
        core.create_namespaced_pod("default", {"metadata": {"name": "from-gitea"}, "spec": {
            "imagePullSecrets": [{"name": "gitea-pull"}],
            "containers": [{"name": "app", "image": f"{registry}/{name}:latest"}]}})

        def waiting_reason():
            cs = core.read_namespaced_pod("from-gitea", "default").status.container_statuses or []
            w = cs[0].state.waiting if cs else None
            return w if w and w.reason == "ImagePullBackOff" else None
        waiting = poll(waiting_reason, timeout=20, what="ImagePullBackOff")
        assert "not found" in waiting.message

        pat = (sb.dir / "ghcr-token").read_text().strip()
        res = skopeo(sb, "copy", "--all", "--preserve-digests", "--src-cert-dir", "{certs}",
                     "--src-creds", f"jaybrto:{pat}", "--dest-tls-verify=false",
                     "--dest-creds", f"registry-user:{sb.token_file.read_text().strip()}",
                     f"docker://ghcr.io:{port}/{name}:latest", f"docker://{registry}/{name}:latest")
        assert res.returncode == 0, res.stderr
        ghcr_digest = state(sb)["registries"]["ghcr"][f"{name}:latest"]
        assert state(sb)["registries"]["gitea"][f"{name}:latest"] == ghcr_digest

        def image_id():
            cs = core.read_namespaced_pod("from-gitea", "default").status.container_statuses or []
            return cs[0].image_id if cs and cs[0].state.running else None
        assert poll(image_id, timeout=30, what="the pod running") == f"{registry}/{name}@{ghcr_digest}"
    finally:
        api.close()


def test_tag_list_pages_carry_link_until_a_page_is_empty(pusher):
    """Gitea sets Link on every non-empty page: a client stops at the empty one."""
    repo = f"{ORG}/paged"
    for tag in ("a", "b", "c"):
        pusher.image(repo, tag, tag.encode())
    url, pages = f"{pusher.base}/v2/{repo}/tags/list?n=2", []
    while url:
        resp = pusher.req("GET", url)
        pages.append(resp.json()["tags"])
        link = resp.headers.get("link")
        url = pusher.base + link.split(";")[0].strip("<> ") if link else None
        assert len(pages) < 5
    assert pages == [["a", "b"], ["c"], []]


def test_owner_must_exist(pusher):
    org = pusher.req("GET", f"/api/v1/orgs/{ORG}")
    assert org.status_code == 200 and org.json()["username"] == ORG
    assert pusher.req("GET", "/api/v1/users/registry-user").json()["login"] == "registry-user"
    missing = pusher.req("GET", "/api/v1/orgs/no-such-org")
    assert missing.status_code == 404 and "org does not exist" in missing.json()["errors"][0]
    push = pusher.start("no-such-org/app")
    assert push.status_code == 404 and errors(push)[0]["code"] == "NAME_UNKNOWN"
