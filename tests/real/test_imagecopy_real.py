"""The image copy engine (wizard/images) against two real docker-registry 2.8 with token auth.

The engine talks to each registry through a quirk proxy (tests/real/quirkproxy.py) that adds the
GHCR and Gitea behaviours docker-registry lacks and counts what the engine really sent. skopeo and
crane are the independent checkers: for every tag, the sha256 of ``skopeo inspect --raw`` on the
target equals the source's, ``skopeo copy --all --preserve-digests`` out of the target succeeds,
and crane reads the same digest and manifest bytes on both (and lists the same tags).
Test images are built in Python (tests/real/ocibuild.py) and pushed by skopeo.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import poll
from real.ocibuild import Layout, MiB
from real.stack import REPO, WRITER, RegistryPair, push_layout, raw_manifest

from wizard import netclient
from wizard.credentials import Secret
from wizard.images import CopyJob, CopyOptions, Credentials, Registry, RetryPolicy, copy
from wizard.images.client import BULK_READ

FAST_RETRY = RetryPolicy(attempts=5, base=0.05, cap=0.5)


def run_copy(pair: RegistryPair, jobs: list[CopyJob], *, bulk: bool = True, password: str | None = None,
             **options):
    """One copy from this process through the quirk proxies; (report, source client, target client).

    ``bulk``: blob bytes move through the sync clients' worker threads (the product's path); False: the
    async clients alone."""
    async def go():
        sh = netclient.async_client(pair.resolve(), ca_file=str(pair.source.ca_bundle), timeout=30)
        th = netclient.async_client(pair.resolve(), ca_file=str(pair.target.ca_bundle), timeout=30)
        sb = netclient.client(pair.resolve(), ca_file=str(pair.source.ca_bundle), timeout=30,
                              read_size=BULK_READ) if bulk else None
        tb = netclient.client(pair.resolve(), ca_file=str(pair.target.ca_bundle), timeout=30,
                              read_size=BULK_READ) if bulk else None
        try:
            src = Registry(pair.source_proxy.url, sh, bulk=sb, retry=FAST_RETRY,
                           credentials=Credentials(WRITER, Secret(pair.source.tokens[WRITER])))
            dst = Registry(pair.target_proxy.url, th, bulk=tb, retry=FAST_RETRY, credentials=Credentials(
                WRITER, Secret(password if password is not None else pair.target.tokens[WRITER])))
            report = await copy(src, dst, jobs, CopyOptions(**options))
            return report, src, dst
        finally:
            await sh.aclose()
            await th.aclose()
            for c in (sb, tb):
                if c is not None:
                    c.close()
    return asyncio.run(go())


def assert_same_on_both(pair: RegistryPair, repo_src: str, repo_dst: str, tags, tmp: Path, *,
                        into: str = "oci") -> None:
    """Two independent clients' view. skopeo: byte-identical manifests, and the target's image pulls whole with
    every platform (``into``: ``oci`` layout, or ``dir`` for Docker media types, which an OCI layout cannot hold
    as they are). crane: the same digest and the same manifest bytes on both registries."""
    for tag in tags:
        a, b = raw_manifest(pair.source, repo_src, tag), raw_manifest(pair.target, repo_dst, tag)
        assert a is not None and b is not None, f"skopeo cannot read {tag} on {'target' if a else 'source'}"
        assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest(), f"{tag}: the manifest changed"
        want = f"sha256:{hashlib.sha256(b).hexdigest()}"
        for st, repo in ((pair.source, repo_src), (pair.target, repo_dst)):
            digest = st.crane("digest", f"{st.registry}/{repo}:{tag}")
            assert digest.ok and digest.stdout.strip() == want, f"crane digest {repo}:{tag}: {digest}"
            raw = st.crane("manifest", f"{st.registry}/{repo}:{tag}")
            assert raw.ok and hashlib.sha256(raw.stdout.encode("utf-8", "surrogateescape")).hexdigest() == \
                want.split(":", 1)[1], f"crane manifest {repo}:{tag} differs from skopeo's"
        out = tmp / f"out-{tag}"
        res = pair.target.skopeo("copy", "--all", "--preserve-digests", "--src-creds", pair.creds(pair.target),
                                 "--src-cert-dir", "{certs}", f"docker://{pair.target.registry}/{repo_dst}:{tag}",
                                 f"oci:{out}:{tag}" if into == "oci" else f"dir:{out}", timeout=300)
        assert res.ok, f"skopeo copy out of the target failed for {tag}: {res.stderr[-600:]}"


def put_raw(st, tag: str, body: bytes, media: str = "application/vnd.oci.image.index.v1+json") -> None:
    """A manifest PUT straight to the registry (skopeo writes neither a nested index nor a Docker list)."""
    async def go():
        async with netclient.async_client(st.resolve(), ca_file=str(st.ca_bundle)) as http:
            reg = Registry(f"https://{st.registry}", http, credentials=Credentials(WRITER, Secret(st.tokens[WRITER])))
            await reg.put_manifest(REPO, tag, body, media, scopes=(f"repository:{REPO}:push,pull",))
    asyncio.run(go())


def seed(pair: RegistryPair, build, tags: list[str], repo: str = REPO) -> Layout:
    lay = Layout(pair.dir / f"layout-{len(list(pair.dir.iterdir()))}")
    build(lay)
    for tag in tags:
        push_layout(pair.source, lay.dir, tag, repo)
    return lay


@pytest.mark.parametrize("bulk", [True, False], ids=["threads", "async-only"])
def test_index_with_attestations_and_shared_layer_is_copied_byte_identical_and_rerun_is_a_no_op(
        registry_pair, tmp_path, bulk):
    pair = registry_pair
    facts = {}

    def build(lay: Layout):
        shared = lay.random_blob(6 * MiB)
        facts["shared"] = shared[0]
        facts["v1"] = lay.image("v1", shared=shared)
        lay.image("single", platforms=("linux/amd64",), shared=shared, attestations=False)
    lay = seed(pair, build, ["v1"])
    push_layout(pair.source, lay.dir, "single", docker=True, as_tag="docker")  # as a Docker v2 manifest
    progress = []
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1", "docker"))], progress=progress.append,
                            bulk=bulk)
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    by_tag = {t.tag: t for t in report.images[0].tags}
    assert by_tag["v1"].status == "copied" and by_tag["v1"].source_digest == facts["v1"]["digest"]
    assert by_tag["v1"].target_digest == facts["v1"]["digest"]
    assert by_tag["v1"].platforms.count("unknown/unknown") == 2  # the attestation entries came along
    assert by_tag["docker"].media_type == "application/vnd.docker.distribution.manifest.v2+json"
    uploads = pair.target_proxy.uploads()
    assert uploads.count(facts["shared"]) == 1, "the layer both tags and all platforms share went up once"
    assert len(uploads) == len(set(uploads))
    assert not [e for e in pair.target_proxy.entries("POST") if "digest=" in e.path], "no single-POST upload"
    puts = sorted(pair.target_proxy.entries("PUT", "/manifests/"), key=lambda e: e.started)
    assert len(puts) == 4 + 2  # four index entries (children before their index), then the two tags
    assert all(b.started >= a.ended for a, b in zip(puts, puts[1:], strict=False)), "manifest PUTs overlapped"
    order = [e.plain.rsplit("/", 1)[-1] for e in puts]
    assert all(order.index(d) < order.index("v1") for d in facts["v1"]["manifests"].values())
    sending = [e for e in pair.target_proxy.entries() if e.method in ("PUT", "PATCH") and "/blobs/" in e.path]
    most = max(sum(1 for o in sending if o.started <= e.started < o.ended) for e in sending)
    assert most <= 2, f"{most} uploads at once (concurrency 2)"
    assert progress[-1].bytes_done == progress[-1].bytes_total > 6 * MiB
    assert progress[-1].blobs_done == progress[-1].blobs_total == len(uploads)
    assert_same_on_both(pair, REPO, REPO, ["v1", "docker"], tmp_path)

    pair.target_proxy.reset()
    again, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1", "docker"))], bulk=bulk)
    assert again.ok and {t.status for t in again.images[0].tags} == {"present"}
    assert pair.target_proxy.uploads() == [] and pair.target_proxy.mutating() == [], \
        [f"{e.method} {e.plain}" for e in pair.target_proxy.mutating()]


def test_docker_manifest_list_is_copied_as_the_same_bytes(registry_pair, tmp_path):
    """The fourth media type: skopeo converts two single-platform images to Docker v2 manifests; the list
    over them is written straight to the source registry."""
    pair = registry_pair
    lay = Layout(tmp_path / "layout")
    for plat in ("linux/amd64", "linux/arm64"):
        lay.image(plat.replace("/", "-"), platforms=(plat,), attestations=False)
    entries = []
    for plat in ("linux/amd64", "linux/arm64"):
        tag = plat.replace("/", "-")
        res = pair.source.skopeo("copy", "--format", "v2s2", "--override-arch", plat.split("/")[1],
                                 "--dest-creds", pair.creds(pair.source), "--dest-cert-dir", "{certs}",
                                 f"oci:{lay.dir}:{tag}", f"docker://{pair.source.registry}/{REPO}:{tag}")
        assert res.ok, res.stderr
        body = raw_manifest(pair.source, REPO, tag)
        assert json.loads(body)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        entries.append({"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": len(body),
                        "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                        "platform": {"architecture": plat.split("/")[1], "os": "linux"}})
    media = "application/vnd.docker.distribution.manifest.list.v2+json"
    listing = json.dumps({"schemaVersion": 2, "mediaType": media, "manifests": entries}, indent=7).encode()
    put_raw(pair.source, "list", listing, media)
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("list",))])
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    t = report.images[0].tags[0]
    assert t.media_type == media and t.target_digest == "sha256:" + hashlib.sha256(listing).hexdigest()
    assert t.platforms == ("linux/amd64", "linux/arm64")
    assert_same_on_both(pair, REPO, REPO, ["list"], tmp_path, into="dir")


def test_sigkill_mid_copy_then_rerun_sends_only_the_missing_blobs(registry_pair, tmp_path):
    pair = registry_pair
    facts = {}

    def build(lay: Layout):
        facts["img"] = lay.image("big", platforms=("linux/amd64",), own_size=24 * MiB, layers=4,
                                 attestations=False)
        facts["blobs"] = {d for d, s in lay.sizes.items() if s == 24 * MiB}
    seed(pair, build, ["big"])
    pair.target_proxy.q.body_rate = 40 * MiB  # so the kill lands mid-copy, not after it
    cfg = {"resolve": pair.resolve(), "jobs": [{"source": REPO, "target": REPO, "tags": ["big"]}],
           "source": {"url": pair.source_proxy.url, "ca_file": str(pair.source.ca_bundle), "user": WRITER},
           "target": {"url": pair.target_proxy.url, "ca_file": str(pair.target.ca_bundle), "user": WRITER},
           "options": {"concurrency": 2}}
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "SOURCE_TOKEN": pair.source.tokens[WRITER], "TARGET_TOKEN": pair.target.tokens[WRITER],
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    runner = [sys.executable, str(Path(__file__).with_name("copy_runner.py")), str(path)]
    proc = subprocess.Popen(runner, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        poll(lambda: set(pair.target_proxy.uploads()) & facts["blobs"], timeout=60, interval=0.01,
             what="a first layer uploaded")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    poll(pair.target_proxy.idle, timeout=30, what="the proxy finished the killed client's requests")
    first = set(pair.target_proxy.uploads())
    assert first & facts["blobs"] and not facts["blobs"] <= first, "the kill did not land mid-copy"
    assert pair.target_proxy.manifest_puts() == []
    pair.target_proxy.reset()
    pair.target_proxy.q.body_rate = None
    done = subprocess.run(runner, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["ok"], done.stdout
    second = pair.target_proxy.uploads()
    assert not set(second) & first, f"the rerun uploaded again what was there: {set(second) & first}"
    assert facts["blobs"] <= first | set(second)
    assert report["totals"]["blobs_present"] == len(first)
    assert_same_on_both(pair, REPO, REPO, ["big"], tmp_path)


@pytest.mark.parametrize("bulk", [True, False], ids=["threads", "async-only"])
def test_corrupted_blob_fails_the_tag_and_writes_no_manifest(registry_pair, bulk):
    pair = registry_pair
    facts = {}

    def build(lay: Layout):
        shared = lay.random_blob(3 * MiB)
        facts["shared"] = shared[0]
        lay.image("v1", shared=shared)
    seed(pair, build, ["v1"])
    pair.source_proxy.q.flip_blobs = {facts["shared"]}
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1",))], bulk=bulk)
    tag = report.images[0].tags[0]
    assert not report.ok and tag.status == "failed"
    assert "sha256" in tag.error and "no manifest written" in tag.error
    assert pair.target_proxy.manifest_puts() == []
    assert facts["shared"] not in pair.target_proxy.uploads()
    assert raw_manifest(pair.target, REPO, "v1") is None  # skopeo finds nothing under the tag


@pytest.mark.parametrize("bulk", [True, False], ids=["threads", "async-only"])
def test_413_and_cut_off_uploads_switch_to_chunks_with_content_range(registry_pair, tmp_path, bulk):
    pair = registry_pair

    def build(lay: Layout):
        lay.image("v1", platforms=("linux/amd64",), own_size=6 * MiB, layers=2, attestations=False)
    seed(pair, build, ["v1"])
    q = pair.target_proxy.q
    q.require_content_range = True
    q.max_body = 3 * MiB
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1",))], chunk_size=1 * MiB, bulk=bulk)
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    tp = pair.target_proxy
    assert [e for e in tp.entries("PUT") if e.status == 413], "the whole-blob PUT met the body limit"
    patches = tp.entries("PATCH")
    assert len(patches) >= 12 and all(e.status == 202 for e in patches)
    assert_same_on_both(pair, REPO, REPO, ["v1"], tmp_path)

    # a proxy that cuts requests after 0.3 s: the whole-blob PUT dies, 1 MiB chunks pass
    seed(pair, lambda lay: lay.image("v2", platforms=("linux/amd64",), own_size=6 * MiB, attestations=False),
         ["v2"])
    tp.reset()
    q.max_body, q.cutoff, q.body_rate = None, 0.3, 8 * MiB
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v2",))], chunk_size=1 * MiB, bulk=bulk)
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    assert [e for e in tp.entries("PUT") if e.note == "cut off"]
    assert len(tp.entries("PATCH")) >= 6
    assert_same_on_both(pair, REPO, REPO, ["v2"], tmp_path)


def test_large_blobs_go_in_chunks_from_the_start_and_416_is_recovered(registry_pair, tmp_path):
    pair = registry_pair
    seed(pair, lambda lay: lay.image("v1", platforms=("linux/amd64",), own_size=5 * MiB, attestations=False),
         ["v1"])
    pair.target_proxy.q.require_content_range = True
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1",))], chunk_size=2 * MiB,
                            monolithic_max=4 * MiB)
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    big_puts = [e for e in pair.target_proxy.entries("PUT", r"/blobs/uploads/") if e.bytes_in > 4 * MiB]
    assert big_puts == [], "a blob above monolithic_max went up in one PUT"
    assert len(pair.target_proxy.entries("PATCH")) == 3
    assert_same_on_both(pair, REPO, REPO, ["v1"], tmp_path)


@pytest.mark.parametrize("bulk", [True, False], ids=["threads", "async-only"])
def test_429_with_retry_after_and_ghcr_body_hint_are_honoured(registry_pair, bulk):
    pair = registry_pair
    seed(pair, lambda lay: lay.image("v1", platforms=("linux/amd64",), attestations=False), ["v1"])
    sp = pair.source_proxy
    sp.q.reject_429 = [{"match": "/manifests/v1", "count": 1, "retry_after": "1"},
                       {"match": "/blobs/sha256:", "count": 1, "retry_after": None,
                        "body": "toomanyrequests: retry-after: 400ms, allowed: 44000/minute"}]
    report, src, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1",))])
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    for pattern, wait in (("/manifests/v1", 1.0), ("/blobs/sha256:", 0.4)):
        hits = sp.entries("GET", pattern)
        first429 = next(i for i, e in enumerate(hits) if e.status == 429)
        retry = next(e for e in hits[first429 + 1:] if e.path == hits[first429].path)
        assert retry.started - hits[first429].ended >= wait * 0.95, f"{pattern}: retried too early"
    assert src.stats.retries >= 2


@pytest.mark.parametrize("bulk", [True, False], ids=["threads", "async-only"])
def test_blob_redirects_drop_authorization_and_expired_storage_urls_are_refetched(registry_pair, tmp_path, bulk):
    pair = registry_pair
    seed(pair, lambda lay: lay.image("v1", platforms=("linux/amd64",), own_size=2 * MiB, attestations=False),
         ["v1"])
    sp = pair.source_proxy
    sp.q.redirect_blobs, sp.q.expire_next = True, 1
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1",))], bulk=bulk)
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    storage = sp.storage_log
    assert storage and all(e.note != "authorization" for e in storage), "Authorization went to the storage host"
    assert any(e.status == 403 for e in storage), "the expired URL was not met"
    assert all(e.method == "GET" for e in storage)
    assert sum(e.status == 307 for e in sp.entries("GET", "/blobs/")) > len({e.plain for e in storage if
                                                                          e.status == 200})
    assert_same_on_both(pair, REPO, REPO, ["v1"], tmp_path)


def test_crane_lists_the_same_tags_and_the_catalog_names_every_copied_repository(registry_pair):
    """crane, a second client written apart from skopeo and from us: after a copy of every tag, the target lists
    the source's tags (tag listing), its catalog names each repository copied into, and the digests agree."""
    pair = registry_pair
    tags = [f"t{i}" for i in range(4)]
    seed(pair, lambda lay: lay.image("t0", platforms=("linux/amd64",), attestations=False), ["t0"])
    for tag in tags[1:]:
        res = pair.source.crane("tag", f"{pair.source.registry}/{REPO}:t0", tag)
        assert res.ok, res.stderr
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=tuple(tags)), CopyJob(REPO, "acme/second",
                                                                                  tags=("t2",))])
    assert report.ok, json.dumps(report.to_dict(), indent=1)

    def ls(st, repo):
        res = st.crane("ls", f"{st.registry}/{repo}")
        assert res.ok, res.stderr
        return sorted(res.stdout.split())
    assert ls(pair.target, REPO) == ls(pair.source, REPO) == tags
    assert ls(pair.target, "acme/second") == ["t2"]
    catalog = pair.target.crane("catalog", pair.target.registry)
    assert catalog.ok, catalog.stderr
    assert {REPO, "acme/second"} <= set(catalog.stdout.split())
    src = pair.source.crane("digest", f"{pair.source.registry}/{REPO}:t0").stdout.strip()
    assert src.startswith("sha256:") and {pair.target.crane("digest", f"{pair.target.registry}/{r}:t2").stdout.strip()
                                          for r in (REPO, "acme/second")} == {src}


@pytest.mark.parametrize("claimed", ['sha256:' + 'a' * 64 + '" # x', "sha256:" + "A" * 64,
                                     "sha256:abc", "md5:" + "a" * 64, "sha256:" + "a" * 64 + " extra"])
def test_a_digest_a_registry_names_must_be_sha256_hex_or_the_call_fails(registry_pair, claimed):
    """A Docker-Content-Digest is registry data that workloads.pin_digests writes into pod specs and into the
    operator's manifest files: anything but sha256:<64 hex> (a quote, a comment, another algorithm) is refused
    where it is read, named in the error, never returned."""
    from wizard.images.client import RegistryError
    pair = registry_pair
    seed(pair, lambda lay: lay.image("v1", platforms=("linux/amd64",), attestations=False), ["v1"])
    pair.source_proxy.q.reject_429 = [{"match": "/manifests/v1", "count": 1, "status": 200,
                                       "headers": {"Docker-Content-Digest": claimed}}]

    async def head():
        async with netclient.async_client(pair.resolve(), ca_file=str(pair.source.ca_bundle), timeout=30) as http:
            src = Registry(pair.source_proxy.url, http, retry=FAST_RETRY,
                           credentials=Credentials(WRITER, Secret(pair.source.tokens[WRITER])))
            return await src.head_manifest(REPO, "v1", scopes=(f"repository:{REPO}:pull",))
    with pytest.raises(RegistryError, match="not sha256:<64 hex digits>") as err:
        asyncio.run(head())
    assert err.value.code == "BAD_DIGEST"
    assert asyncio.run(head()).startswith("sha256:")  # the registry's own answer, next time, is taken


def test_second_repository_gets_the_blobs_by_mount(registry_pair, tmp_path):
    pair = registry_pair
    facts = {}

    def build(lay: Layout):
        shared = lay.random_blob(4 * MiB)
        facts["shared"] = shared[0]
        lay.image("v1", shared=shared)
    seed(pair, build, ["v1"])
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1",)), CopyJob(REPO, "acme/app2", tags=("v1",))])
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    tp = pair.target_proxy
    assert tp.uploads().count(facts["shared"]) == 1
    a, b = report.images
    assert {a.blobs_mounted, b.blobs_mounted} == {0, a.blobs_uploaded + b.blobs_uploaded}
    assert facts["shared"] in tp.mounts()
    # a mount from a repository that lacks the blob opens an upload instead: cancelled, then a real upload
    tp.reset()
    report, _, _ = run_copy(pair, [CopyJob(REPO, "acme/app4", tags=("v1",), mount_from=("acme/empty",))])
    assert report.ok and report.images[0].blobs_mounted == 0
    tried = [e for e in tp.entries("POST", "mount=") if "from=acme%2Fempty" in e.path or "from=acme/empty" in e.path]
    assert tried and all(e.status == 202 for e in tried)
    assert len(tp.entries("DELETE", "/blobs/uploads/")) >= len(tried)
    assert tp.uploads().count(facts["shared"]) == 1
    # a later run into a third repository: told where the blobs are, it mounts everything
    tp.reset()
    report, _, _ = run_copy(pair, [CopyJob(REPO, "acme/app3", tags=("v1",), mount_from=(REPO,))])
    assert report.ok and report.images[0].blobs_uploaded == 0 and report.images[0].blobs_mounted > 0
    assert tp.uploads() == []
    assert_same_on_both(pair, REPO, "acme/app2", ["v1"], tmp_path)
    assert_same_on_both(pair, REPO, "acme/app3", ["v1"], tmp_path)


def test_dry_run_sends_only_get_and_head(registry_pair):
    pair = registry_pair
    seed(pair, lambda lay: lay.image("v1"), ["v1"])
    report, _, dst = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1",))], dry_run=True)
    assert report.ok and report.dry_run and report.images[0].tags[0].status == "would-copy"
    for proxy in (pair.source_proxy, pair.target_proxy):
        assert {e.method for e in proxy.entries()} <= {"GET", "HEAD"}
    assert set(dst.stats.requests) <= {"GET", "HEAD"}
    assert raw_manifest(pair.target, REPO, "v1") is None


def test_checks_before_copying_missing_owner_case_collision_nested_index(registry_pair):
    pair = registry_pair
    facts = {}

    def build(lay: Layout):
        facts["inner"] = lay.image("inner", platforms=("linux/amd64",), attestations=False)
        facts["nested"] = lay.nested("nested", facts["inner"]["digest"], lay.sizes[facts["inner"]["digest"]])
        lay.small("Latest", "one")
        lay.small("latest", "two")
    lay = seed(pair, build, ["inner", "Latest", "latest"])
    put_raw(pair.source, "nested", (lay.dir / "blobs" / "sha256" / facts["nested"][7:]).read_bytes())
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1",))], owner_exists=lambda owner: owner != "acme")
    assert report.images[0].errors and "does not exist" in report.images[0].errors[0]
    assert pair.target_proxy.entries() == [], "the owner is checked before anything is sent"

    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("nested", "Latest", "latest", "inner"))],
                            owner_exists=lambda owner: True)
    by_tag = {t.tag: t for t in report.images[0].tags}
    assert "nested indexes" in by_tag["nested"].error
    assert "differ only in case" in by_tag["Latest"].error and by_tag["latest"].status == "failed"
    assert by_tag["inner"].status == "copied"
    assert [p.rsplit("/", 1)[-1] for p in pair.target_proxy.manifest_puts()].count("nested") == 0
    assert not {"Latest", "latest"} & {p.rsplit("/", 1)[-1] for p in pair.target_proxy.manifest_puts()}


def test_tag_pages_are_followed_and_a_stuck_last_stops(registry_pair):
    pair = registry_pair
    names = [f"t{i}" for i in range(5)]
    seed(pair, lambda lay: [lay.small(n, n) for n in names], names)
    pair.source_proxy.q.page = 2
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, all_tags=True)], dry_run=True)
    assert sorted(t.tag for t in report.images[0].tags) == names
    assert len(pair.source_proxy.entries("GET", "/tags/list")) == 3
    pair.source_proxy.q.stuck_pages = True
    pair.source_proxy.reset()
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tag_pattern=r"t[0-9]")], dry_run=True)
    assert sorted(t.tag for t in report.images[0].tags) == names[:4]  # page 1, page 2, then the same again
    assert len(pair.source_proxy.entries("GET", "/tags/list")) <= 4


def test_referrers_missing_so_fallback_signature_tags_are_copied(registry_pair, tmp_path):
    pair = registry_pair
    facts = {}

    def build(lay: Layout):
        facts["v1"] = lay.image("v1", platforms=("linux/amd64",), attestations=False)
        facts["sig"] = "sha256-" + facts["v1"]["digest"][7:] + ".sig"
        lay.small(facts["sig"], "a signature")
    lay = seed(pair, build, ["v1"])
    push_layout(pair.source, lay.dir, facts["sig"])
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1",))])
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    kinds = {t.tag: t.kind for t in report.images[0].tags}
    assert kinds == {"v1": "tag", facts["sig"]: "fallback"}
    assert pair.source_proxy.entries("GET", "/referrers/")[0].status == 404
    assert_same_on_both(pair, REPO, REPO, [facts["sig"]], tmp_path)


def test_referrers_api_where_the_source_has_it_copies_each_referrer_by_digest(registry_pair, tmp_path):
    pair = registry_pair
    facts = {}

    def build(lay: Layout):
        facts["v1"] = lay.image("v1", platforms=("linux/amd64",), attestations=False)
        facts["sbom"] = lay.small("sbom-holder", "an sbom that refers to v1")
    lay = seed(pair, build, ["v1", "sbom-holder"])
    size = lay.sizes[facts["sbom"]]
    pair.source_proxy.q.referrers = {facts["v1"]["digest"]: [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": facts["sbom"], "size": size,
         "artifactType": "application/spdx+json"}]}
    report, _, _ = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1",))])
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    by_tag = {t.tag: t for t in report.images[0].tags}
    assert by_tag[facts["sbom"]].kind == "referrer" and by_tag[facts["sbom"]].status == "copied"
    assert f"/v2/{REPO}/manifests/{facts['sbom']}" in pair.target_proxy.manifest_puts()
    a, b = raw_manifest(pair.source, REPO, facts["sbom"]), raw_manifest(pair.target, REPO, facts["sbom"])
    assert a is not None and a == b


def test_token_refreshed_on_401_and_secrets_stay_out_of_the_report(registry_pair):
    pair = registry_pair
    seed(pair, lambda lay: lay.image("v1", platforms=("linux/amd64",), attestations=False), ["v1"])
    realm = f'Bearer realm="{pair.target.realm}",service="container_registry",scope="repository:{REPO}:pull,push"'
    pair.target_proxy.q.reject_429 = [{"match": "/blobs/uploads/", "count": 1, "status": 401,
                                       "headers": {"WWW-Authenticate": realm}, "body": "token expired"}]
    report, _, dst = run_copy(pair, [CopyJob(REPO, REPO, tags=("v1",))])
    assert report.ok, json.dumps(report.to_dict(), indent=1)
    assert dst.stats.tokens >= 2, "the 401 did not make the client fetch a fresh token"

    pair.target_proxy.q.reject_429 = []
    wrong = "not-the-token-" + "x" * 20
    report, _, _ = run_copy(pair, [CopyJob(REPO, "acme/other", tags=("v1",))], password=wrong)
    text = json.dumps(report.to_dict())
    assert not report.ok and "refused" in text and "check the user name and token" in text
    for secret in (wrong, pair.target.tokens[WRITER], pair.source.tokens[WRITER]):
        assert secret not in text
    assert "Bearer" not in text and "Basic" not in text
