"""Manifest rewrite [Step 6]: only image strings and secret names change, byte for byte everything else.

The corpus in tests/manifests/ is shaped like real repositories: comments everywhere, flow and
block style, quoted and unquoted scalars, CRLF, anchors and merge keys, multi-document files,
batch kinds, a kustomization and Helm-style values.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from helpers import mutating_requests, run_cli

from wizard import manifests as M
from wizard import plan as P
from wizard.cluster import Cluster
from wizard.credentials import Secret
from wizard.stages.base import Context
from wizard.stages.workloads import Workloads, manifest_checks

CORPUS = Path(__file__).resolve().parent.parent / "manifests"
NAMES = ("github-workflow-agents", "gwa-orchestrator", "gwa-webhook")
REGISTRY = "registry.example.test"
PLAN_DATA = {
    "version": 1,
    "gitea": {"root_url": "https://gitea.k3s.example.test/", "org": "jaybrto"},
    "registry": {"host": REGISTRY},
    "images": [{"source": f"ghcr.io/jaybrto/{n}", "target": f"{REGISTRY}/jaybrto/{n}"} for n in NAMES],
}
PLAN = P.from_dict(PLAN_DATA)
FILES = sorted(p.name for p in CORPUS.iterdir() if p.suffix == ".yaml")

# edits each corpus file must get: (image edits, pull-secret edits)
EXPECTED = {
    "already-migrated.yaml": (0, 0),
    "anchors.yaml": (3, 2),  # the anchored image once for all its aliases
    "batch.yaml": (3, 2),
    "gwa-orchestrator.yaml": (1, 2),
    "gwa-runner-statefulset.yaml": (2, 1),
    "gwa-webhook.crlf.yaml": (1, 1),
    "json-style.yaml": (2, 1),
    "kustomization.yaml": (3, 0),
    "odd-forms.yaml": (1, 0),
    "values.yaml": (1, 1),
}


def new_image(value: str) -> str | None:
    img = M.plan_image(value, PLAN)
    return None if img is None else img.target + value[len(img.source):]


def assert_only_images_and_secrets_changed(before, after, path="") -> None:
    """Walk both parses together: every differing leaf is an image moved to Gitea or the secret renamed."""
    if isinstance(before, dict):
        assert isinstance(after, dict) and list(before) == list(after), path
        for k in before:
            assert_only_images_and_secrets_changed(before[k], after[k], f"{path}.{k}")
    elif isinstance(before, list):
        assert isinstance(after, list) and len(before) == len(after), path
        for i, (a, b) in enumerate(zip(before, after, strict=True)):
            assert_only_images_and_secrets_changed(a, b, f"{path}[{i}]")
    elif before != after:
        ok = (before == PLAN.old_pull_secret and after == PLAN.pull_secret) or new_image(before) == after
        assert ok, f"{path}: {before!r} -> {after!r} is neither an image nor the pull secret"


def test_the_corpus_is_real_world_shaped():
    assert set(FILES) == set(EXPECTED)
    assert b"\r\n" in (CORPUS / "gwa-webhook.crlf.yaml").read_bytes()  # .gitattributes keeps the CRLF
    texts = {f: (CORPUS / f).read_text() for f in FILES}
    assert all("#" in t for f, t in texts.items() if f != "json-style.yaml")  # comments everywhere
    assert "&" in texts["anchors.yaml"] and "<<:" in texts["anchors.yaml"]
    assert sum(t.count("\n---") for t in texts.values()) >= 6  # multi-document files


@pytest.mark.parametrize("name", FILES)
def test_rewrite_touches_only_image_strings_and_secret_names(name):
    before_bytes = (CORPUS / name).read_bytes()
    rw = M.rewrite_file(CORPUS / name, PLAN)
    images = sum(e.what in ("image", "kustomize image") for e in rw.edits)
    secrets = sum(e.what == "pull secret" for e in rw.edits)
    assert (images, secrets) == EXPECTED[name], rw.diff()
    assert rw.before.encode() == before_bytes
    # the text outside the edits is byte-for-byte the original
    rebuilt, pos = "", 0
    for e in rw.edits:
        assert rw.before[e.start:e.end] == e.old
        assert e.old in {i.source for i in PLAN.images} | {PLAN.old_pull_secret}
        rebuilt += rw.before[pos:e.start] + e.new
        pos = e.end
    assert rebuilt + rw.before[pos:] == rw.after
    # line structure, endings, comments and quoting: every changed line is the old line with the swap
    a_lines, b_lines = rw.before.splitlines(keepends=True), rw.after.splitlines(keepends=True)
    assert len(a_lines) == len(b_lines)
    for a, b in zip(a_lines, b_lines, strict=True):
        if a != b:
            swapped = a
            for img in PLAN.images:
                swapped = swapped.replace(img.source, img.target)
            assert b in (swapped, a.replace(PLAN.old_pull_secret, PLAN.pull_secret)), (a, b)
    # semantically: only images and the secret name differ
    assert_only_images_and_secrets_changed(list(yaml.safe_load_all(rw.before)), list(yaml.safe_load_all(rw.after)))


@pytest.mark.parametrize("name", FILES)
def test_a_second_rewrite_changes_nothing(name):
    once = M.rewrite_file(CORPUS / name, PLAN)
    twice = M.rewrite_text(once.after, PLAN, name)
    assert twice.after == once.after and twice.edits == ()
    assert not twice.changed


def test_tags_and_digests_are_kept_and_values_that_are_not_images_stay():
    rw = M.rewrite_file(CORPUS / "gwa-runner-statefulset.yaml", PLAN)
    assert f'image: "{REGISTRY}/jaybrto/github-workflow-agents@sha256:9f86d081' in rw.after
    assert f"image: {REGISTRY}/jaybrto/github-workflow-agents:latest   # moves to Gitea" in rw.after
    assert "value: ghcr.io/jaybrto/github-workflow-agents:latest  # a value, not an image: kept" in rw.after
    assert "# not an image: a comment that mentions ghcr.io/jaybrto/github-workflow-agents stays" in rw.after
    assert "image: docker:27-dind     # Docker Hub: not ours" in rw.after
    batch = M.rewrite_file(CORPUS / "batch.yaml", PLAN).after
    assert f"{REGISTRY}/jaybrto/gwa-orchestrator:nightly@sha256:2c26b46b" in batch
    cm = M.rewrite_file(CORPUS / "gwa-orchestrator.yaml", PLAN).after
    assert "WORKER_IMAGE: ghcr.io/jaybrto/github-workflow-agents:latest" in cm  # ConfigMap data is not an image
    assert "    image: ghcr.io/jaybrto/gwa-webhook:latest\n" in cm  # inside a block string: text, not YAML
    assert "                    image: 'registry.example.test/jaybrto/gwa-orchestrator:v2.4.1'" in cm


def test_unknown_ghcr_images_are_reported_with_their_position_not_guessed():
    rw = M.rewrite_file(CORPUS / "batch.yaml", PLAN)
    unknown = {(n.line, n.column): n.message for n in rw.unknown_images}
    assert set(unknown) == {(20, 20), (42, 14)}
    assert "ghcr.io/jaybrto/not-in-plan:0.3 is on GHCR but not in the plan's images" in unknown[(20, 20)]
    assert "ghcr.io/jaybrto/not-in-plan" in rw.after and "ghcr.io/other-org/debug-tools@sha256" in rw.after
    assert rw.notes_text()[0].startswith(f"{CORPUS / 'batch.yaml'}:20:20: ")


def test_forms_that_cannot_change_in_place_are_reported_and_left_alone():
    rw = M.rewrite_file(CORPUS / "odd-forms.yaml", PLAN)
    kinds = [(n.line, n.kind) for n in rw.notes]
    assert kinds == [(9, "not-surgical"), (11, "not-surgical")]
    assert '"ghcr.io/jaybrto/gwa-webhook:\\x31.0"' in rw.after and "\n        ghcr.io/jaybrto/gwa-webhook:latest" in rw.after
    assert "change it to registry.example.test/jaybrto/gwa-webhook:1.0 by hand" in rw.notes[0].message


def test_a_pod_that_already_names_the_new_secret_keeps_the_old_one_with_a_note():
    text = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  imagePullSecrets:\n  - name: ghcr-secret\n"
            "  - name: gitea-registry-secret\n  containers: [{name: c, image: ghcr.io/jaybrto/gwa-webhook}]\n")
    rw = M.rewrite_text(text, PLAN, "pod.yaml")
    assert "- name: ghcr-secret\n" in rw.after  # renaming would duplicate an entry
    assert [n.kind for n in rw.notes] == ["kept"] and "remove ghcr-secret by hand" in rw.notes[0].message
    assert "image: registry.example.test/jaybrto/gwa-webhook}" in rw.after


def test_kustomization_is_recognised_by_its_file_name_too(tmp_path):
    f = tmp_path / "kustomization.yaml"
    f.write_text("resources: [deploy.yaml]\nimages:\n- name: ghcr.io/jaybrto/gwa-webhook  # pin\n  newTag: v1\n")
    rw = M.rewrite_file(f, PLAN)
    assert rw.after.splitlines()[2] == "- name: registry.example.test/jaybrto/gwa-webhook  # pin"
    other = tmp_path / "other.yaml"
    other.write_text(f.read_text())
    assert not M.rewrite_file(other, PLAN).changed  # a list entry's name is not an image elsewhere


def test_crlf_files_written_as_bytes_keep_every_crlf(tmp_path):
    for name in ("gwa-runner-statefulset.yaml", "anchors.yaml", "kustomization.yaml"):
        lf = (CORPUS / name).read_bytes()
        crlf = tmp_path / name
        crlf.write_bytes(lf.replace(b"\n", b"\r\n"))
        rw = M.rewrite_file(crlf, PLAN)
        rw.write()
        out = crlf.read_bytes()
        assert out.count(b"\n") == out.count(b"\r\n") == lf.count(b"\n")
        assert out == M.rewrite_file(CORPUS / name, PLAN).after.encode().replace(b"\n", b"\r\n")


def test_a_file_that_does_not_parse_is_refused_with_file_line_and_column(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: x\n    image: [unclosed\n")
    with pytest.raises(M.ManifestError) as e:
        M.rewrite_file(bad, PLAN)
    assert str(e.value).startswith(f"{bad}:7:1: not valid YAML") and "not touched" in str(e.value)
    (tmp_path / "latin1.yaml").write_bytes("# caf\xe9\nimage: ghcr.io/jaybrto/gwa-webhook\n".encode("latin-1"))
    with pytest.raises(M.ManifestError, match="not UTF-8"):
        M.rewrite_file(tmp_path / "latin1.yaml", PLAN)


def test_write_is_atomic_keeps_the_mode_and_symlinks_and_refuses_a_file_changed_meanwhile(tmp_path):
    f = tmp_path / "deploy.yaml"
    f.write_bytes((CORPUS / "gwa-webhook.crlf.yaml").read_bytes())
    os.chmod(f, 0o640)
    link = tmp_path / "link.yaml"
    link.symlink_to(f.name)
    rw = M.rewrite_file(link, PLAN)
    rw.write()
    assert link.is_symlink() and stat.S_IMODE(f.stat().st_mode) == 0o640
    assert f.read_bytes() == rw.after.encode()
    assert [p.name for p in tmp_path.iterdir() if "ghcr2gitea-tmp" in p.name] == []
    stale = M.rewrite_text((CORPUS / "batch.yaml").read_text(), PLAN, str(f))
    with pytest.raises(M.ManifestError, match="changed on disk"):
        stale.write()
    assert f.read_bytes() == rw.after.encode()


def copy_corpus(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in FILES:
        (dest / name).write_bytes((CORPUS / name).read_bytes())
    (dest / ".hidden").mkdir()
    (dest / ".hidden" / "skip.yaml").write_text("image: ghcr.io/jaybrto/gwa-webhook\n")
    (dest / "notes.txt").write_text("image: ghcr.io/jaybrto/gwa-webhook\n")
    return dest


def write_plan(tmp_path: Path, **extra) -> Path:
    data = yaml.safe_load(yaml.safe_dump(PLAN_DATA))
    for k, v in extra.items():
        data.setdefault(k, {}).update(v)
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(data))
    return plan


def test_cli_rewrite_shows_diffs_then_writes_and_then_has_nothing_to_do(tmp_path):
    k8s = copy_corpus(tmp_path / "k8s")
    plan = write_plan(tmp_path)
    before = {p: p.read_bytes() for p in k8s.rglob("*") if p.is_file()}
    res = run_cli(None, "rewrite", "--plan", str(plan), str(k8s))
    assert res.returncode == 3, res.stderr
    assert f"--- {k8s / 'anchors.yaml'}\n+++ {k8s / 'anchors.yaml'}\n" in res.stdout  # the path as given, no a//tmp
    assert "a//" not in res.stdout and "+          - name: gitea-registry-secret" in res.stdout
    assert f"note: {k8s / 'batch.yaml'}:20:20: ghcr.io/jaybrto/not-in-plan:0.3" in res.stderr
    assert "9 of 10 file(s) would change" in res.stderr and "--write" in res.stderr
    assert {p: p.read_bytes() for p in before} == before  # a dry look writes nothing
    res = run_cli(None, "rewrite", "--plan", str(plan), "--write", str(k8s))
    assert res.returncode == 0 and "wrote 9 file(s)" in res.stderr, res.stderr
    assert (k8s / "already-migrated.yaml").read_bytes() == before[k8s / "already-migrated.yaml"]
    assert (k8s / ".hidden" / "skip.yaml").read_bytes() == before[k8s / ".hidden" / "skip.yaml"]
    assert (k8s / "notes.txt").read_bytes() == before[k8s / "notes.txt"]
    for name in FILES:
        assert (k8s / name).read_bytes() == M.rewrite_file(CORPUS / name, PLAN).after.encode()
    again = run_cli(None, "rewrite", "--plan", str(plan), "--write", str(k8s))
    assert again.returncode == 0 and again.stdout == "" and "nothing to change" in again.stderr


def test_cli_rewrite_refuses_a_broken_file_and_writes_nothing(tmp_path):
    k8s = copy_corpus(tmp_path / "k8s")
    (k8s / "zz-broken.yaml").write_text("kind: Pod\nspec: {containers: [\n")
    before = {p: p.read_bytes() for p in k8s.iterdir() if p.is_file()}
    res = run_cli(None, "rewrite", "--plan", str(write_plan(tmp_path)), "--write", str(k8s),
                  str(tmp_path / "missing.yaml"))
    assert res.returncode == 2
    assert f"{k8s / 'zz-broken.yaml'}:3:1: not valid YAML" in res.stderr
    assert f"{tmp_path / 'missing.yaml'}: no such file or folder" in res.stderr
    assert "nothing written" in res.stderr
    assert {p: p.read_bytes() for p in before} == before


def test_stage_workloads_rewrites_the_plans_manifest_files(sandbox, tmp_path):
    """The Workloads stage plans the same rewrite (paths from the plan's folder), writes it, then verifies."""
    k8s = copy_corpus(tmp_path / "k8s")
    data = yaml.safe_load(sandbox.plan.read_text())
    data["workloads"] = {"manifests": ["k8s/gwa-webhook.crlf.yaml", "k8s/batch.yaml", "k8s/already-migrated.yaml"]}
    data["images"] = PLAN_DATA["images"]
    data["registry"]["host"] = REGISTRY
    data["registry"]["legacy_hosts"] = []
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(data))
    plan = P.load(plan_file)
    cluster = Cluster.connect(str(sandbox.kubeconfig))
    try:
        ctx = Context(plan=plan, cluster=cluster, token=Secret("x"))
        st = Workloads()
        assert st.precheck(ctx) == []
        checks = {c.name: c for c in manifest_checks(plan)}
        assert checks["manifest files use the Gitea registry"].status == "fail"
        assert "ghcr2gitea rewrite --plan" in checks["manifest files use the Gitea registry"].fix
        files = [c for c in st.plan(ctx, st.inspect(ctx)) if c.target.startswith("file ")]
        assert [c.target for c in files] == [f"file {k8s / 'gwa-webhook.crlf.yaml'}", f"file {k8s / 'batch.yaml'}"]
        assert all(c.action == "write" and "+          image: \"registry.example.test/" in c.diff
                   for c in files[:1])
        n = len(mutating_requests(sandbox))
        st.apply(ctx, files)
        assert len(mutating_requests(sandbox)) == n  # files only: the cluster is not touched
        assert (k8s / "gwa-webhook.crlf.yaml").read_bytes().count(b"\r\n") == 28
        assert [c.target for c in st.plan(ctx, st.inspect(ctx)) if c.target.startswith("file ")] == []
        checks = {c.name: c for c in manifest_checks(plan)}
        assert checks["manifest files use the Gitea registry"].status == "pass"
        left = checks["manifest references the plan does not cover"]
        assert left.status == "warn" and not left.gating and "not-in-plan" in left.cause
        # a broken manifest stops the stage before anything is written anywhere
        (k8s / "batch.yaml").write_text("spec: [\n")
        bad = st.precheck(ctx)
        assert len(bad) == 1 and bad[0].status == "fail" and f"{k8s / 'batch.yaml'}:2:1" in bad[0].cause
    finally:
        cluster.close()


def test_plan_command_names_the_broken_manifest(sandbox, tmp_path):
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "app.yaml").write_text("kind: Deployment\nspec:\n  - a\n  b: c\n")
    data = yaml.safe_load(sandbox.plan.read_text())
    data["workloads"] = {"manifests": ["k8s"]}
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(data))
    res = run_cli(sandbox, "plan", "--plan", str(plan_file))
    assert "Workloads: cannot plan: manifest files parse:" in res.stdout, res.stdout
    assert f"{tmp_path / 'k8s' / 'app.yaml'}:4:3: not valid YAML" in res.stdout
