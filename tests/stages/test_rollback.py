"""``ghcr2gitea rollback`` (issue 18 §1): the way back, proven like the way forward.

On a sandbox whose nodes already had registries.yaml entries (a docker.io mirror, another registry's
credentials): apply, then rollback. Every node's file is byte for byte what it was, each node restarted once
more and proven, the workloads run their original GHCR images with their original pull secrets, the wizard's
objects are gone, and ``audit`` reports the pre-migration findings (exit 1).
"""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import EXISTING_REGISTRIES, MUTATING, poll, run_cli, sandbox_state

from sandbox.containerd import REGISTRIES_PATH
from wizard.cluster import Cluster, kind_of

# the node's own file: a comment, a mirror and another registry's credentials stay
EXISTING = "# kept byte for byte\n" + EXISTING_REGISTRIES

WORKLOADS = (("Deployment", "gwa-webhook"), ("Deployment", "gwa-orchestrator"), ("StatefulSet", "gwa-runner"))


def pod_templates(sb) -> dict:
    api = Cluster.connect(str(sb.kubeconfig))
    try:
        out = {}
        for kind, name in WORKLOADS:
            spec = api.get(kind, name, "default")["spec"]["template"]["spec"]
            out[(kind, name)] = ([c["image"] for c in spec["containers"]],
                                 [s["name"] for s in spec.get("imagePullSecrets") or []])
        return out
    finally:
        api.close()


def wizard_objects(sb) -> list[str]:
    api = Cluster.connect(str(sb.kubeconfig))
    try:
        found = []
        for kind in ("Secret", "ConfigMap", "Deployment", "Service", "Ingress", "Role", "RoleBinding"):
            for obj in api.list(kind, None, labels="app.kubernetes.io/managed-by=ghcr2gitea"):
                md = obj["metadata"]
                if md["name"].startswith("ghcr2gitea-") and "journal" in md["name"]:
                    continue  # the journals stay: they are the record of what was done
                found.append(f"{kind} {md.get('namespace')}/{md['name']}")
        return found
    finally:
        api.close()


def running_images(sb) -> dict:
    """What ``kubectl get pods`` shows of each workload: the images of its pods that are not terminating (all
    of them ready), and the workload's ready replicas out of those wanted."""
    api = Cluster.connect(str(sb.kubeconfig))
    try:
        out = {}
        for kind, name in WORKLOADS:
            obj = api.get(kind, name, "default")
            pods = [p for p in api.list("Pod", "default", labels=f"app={name}")
                    if not p["metadata"].get("deletionTimestamp")]
            ready = all(any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
                        for p in pods)
            out[(kind, name)] = (sorted(c["image"] for p in pods for c in p["spec"]["containers"]), ready,
                                 f"{obj['status'].get('readyReplicas', 0)}/{obj['spec']['replicas']}")
        return out
    finally:
        api.close()


def pin_by_digest(sb) -> dict:
    """As an operator pins images: gwa-orchestrator by digest alone, gwa-runner by tag and digest (the digests
    GHCR serves); rolled out before the migration sees them. The references set, by workload."""
    ghcr = sandbox_state(sb)["registries"]["ghcr"]
    refs = {("Deployment", "gwa-orchestrator"): "ghcr.io/jaybrto/gwa-orchestrator@"
            + ghcr["jaybrto/gwa-orchestrator:latest"],
            ("StatefulSet", "gwa-runner"): "ghcr.io/jaybrto/github-workflow-agents:latest@"
            + ghcr["jaybrto/github-workflow-agents:latest"]}
    api = Cluster.connect(str(sb.kubeconfig))
    try:
        for (kind, name), ref in refs.items():
            api.request("PATCH", kind_of(kind).path("default", name), query={"fieldManager": "kubectl-patch"},
                        body=[{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": ref}],
                        content_type="application/json-patch+json")
        for kind, name in refs:
            poll(lambda k=kind, n=name: _rolled_out(api.get(k, n, "default")), timeout=30, what=f"{name} rolled out")
    finally:
        api.close()
    return refs


def _rolled_out(obj: dict) -> bool:
    st, want = obj.get("status") or {}, obj["spec"].get("replicas", 1)
    return (st.get("observedGeneration", 0) >= obj["metadata"]["generation"] and st.get("updatedReplicas", 0) == want
            and st.get("readyReplicas", 0) == want and st.get("replicas", 0) == want)


def ghcr_writes(sb) -> list[str]:
    """Every request to the sandbox's ghcr.io (its registry API and blob storage) that would change it; a POST
    for a token (containerd's OAuth2 try, before its GET) asks for no change."""
    return [f"{m} {host}{path}" for m, host, path, _ in sb.cluster.ghcr.requests
            if m in MUTATING and path != "/token"]


def node_files(sb) -> dict:
    return {n: v["files"].get(REGISTRIES_PATH) for n, v in sandbox_state(sb)["nodes"].items()}


def restarts(sb) -> dict:
    return {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()}


@pytest.fixture
def migrated(make_sandbox):
    sb = make_sandbox(servers=1, agents=1, existing_registries=EXISTING)
    pinned = pin_by_digest(sb)  # references with digests must come back exactly as they were
    before = {"files": node_files(sb), "templates": pod_templates(sb), "objects": wizard_objects(sb),
              "pinned": pinned, "running": running_images(sb)}
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    assert pod_templates(sb) != before["templates"]
    return sb, before


# on both API servers: the JSON patches that put images and pull secrets back, and the deletes with uid
# preconditions, are judged by a real kube-apiserver too
@pytest.mark.parametrize("world_api", ["sandbox", pytest.param("real", marks=pytest.mark.real)], indirect=True)
def test_rollback_returns_nodes_workloads_and_objects_to_before(migrated):
    sb, before = migrated
    after_apply = restarts(sb)
    dry = run_cli(sb, "rollback", "--plan", str(sb.plan), "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Workloads back: " in dry.stdout and "change(s) pending" in dry.stdout
    assert node_files(sb) != before["files"], "the dry run changed a node file"
    copied = sandbox_state(sb)["registries"]
    assert copied["gitea"], "the migration copied no image to Gitea"
    res = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "images copied to Gitea stay" in res.stdout
    # what the operator sees once the command returns: the pods of each workload run the images they ran
    # before the migration, digest references exactly as pinned, and all are ready
    running = running_images(sb)
    assert running == before["running"]
    for key, ref in before["pinned"].items():
        assert before["templates"][key][0] == [ref] and running[key][0] == [ref], (key, running[key])
    # the images copied to Gitea stay there (every tag, its manifest); GHCR was only ever read
    regs = sandbox_state(sb)["registries"]
    assert regs == copied
    for tag, digest in regs["gitea"].items():
        assert digest in sb.cluster.gitea.repos[tag.rsplit(":", 1)[0]].manifests, tag
    assert ghcr_writes(sb) == [], ghcr_writes(sb)
    assert node_files(sb) == before["files"], "a node's registries.yaml is not what it was before the migration"
    state = sandbox_state(sb)
    for name, node in state["nodes"].items():
        assert not [f for f in node["files"] if f.startswith(REGISTRIES_PATH + ".bak-")], name
        assert node["loaded_registries"] == before["files"][name], f"{name}: k3s did not load the restored file"
        assert f"{name}: restarted and proven" in res.stdout
    assert restarts(sb) == {n: k + 1 for n, k in after_apply.items()}, "each node restarts exactly once more"
    assert pod_templates(sb) == before["templates"]
    assert wizard_objects(sb) == before["objects"]
    again = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes")
    assert again.returncode == 2 and "already rolled back" in again.stderr, again.stdout + again.stderr
    audit = run_cli(sb, "audit", "--plan", str(sb.plan), "--format", "json")
    assert audit.returncode == 1, audit.stdout + audit.stderr
    failing = {s["key"] for s in json.loads(audit.stdout)["stages"] if s["status"] == "fail"}
    assert {"secrets", "workloads"} <= failing, failing
    token = sb.token_file.read_text().strip()
    for out in (dry, res, again, audit):
        assert token not in out.stdout + out.stderr


def test_rollback_keeps_what_the_node_changed_since(migrated):
    """A node whose file changed after the migration keeps everything but the wizard's entries."""
    sb, before = migrated
    node = next(iter(sandbox_state(sb)["nodes"]))
    sim = sb.cluster.nodes[node]
    text = sim.fs.read(REGISTRIES_PATH).decode() + '  "other.example.test":\n    tls:\n      insecure_skip_verify: true\n'
    sim.fs.write(REGISTRIES_PATH, text.encode(), mode=0o600)
    res = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    kept = yaml.safe_load(node_files(sb)[node])
    assert set(kept["configs"]) == {"quay.example.test", "other.example.test"}
    assert kept["mirrors"] == yaml.safe_load(EXISTING)["mirrors"]
    assert kept["configs"]["quay.example.test"]["auth"]["password"] == "keep-me"


def test_rollback_without_a_journal_refuses_and_says_what_it_needs(make_sandbox):
    sb = make_sandbox(servers=1, agents=1)
    res = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes")
    assert res.returncode == 2
    assert "no journal of a migration" in res.stderr and "ghcr2gitea-journal" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("point", ["after:rollback-workloads", "after:rollback-registries", "restart:agent1",
                                   "before:rollback-objects"])
def test_rollback_killed_then_rerun_ends_the_same(migrated, point):
    """SIGKILL in the middle of the rollback, then the same command again: it resumes (the Lease, the rollback's
    own journal) and ends in the same cluster, each node restarted exactly once more."""
    sb, before = migrated
    after_apply = restarts(sb)
    killed = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes", "--node-timeout", "20",
                     env={"GHCR2GITEA_KILL_AT": point})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    res = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes", "--node-timeout", "20",
                  "--take-over-stale-lock")
    assert res.returncode == 0, killed.stdout + res.stdout + res.stderr
    assert "resuming an unfinished" in res.stdout
    assert node_files(sb) == before["files"]
    assert pod_templates(sb) == before["templates"]
    assert wizard_objects(sb) == before["objects"]
    assert restarts(sb) == {n: k + 1 for n, k in after_apply.items()}
    audit = run_cli(sb, "audit", "--plan", str(sb.plan), "--format", "json")
    assert audit.returncode == 1, audit.stdout + audit.stderr
    failing = {s["key"] for s in json.loads(audit.stdout)["stages"] if s["status"] == "fail"}
    assert {"secrets", "workloads"} <= failing, failing


MANIFEST = """# the operator's deployment: comments and layout stay
apiVersion: apps/v1
kind: Deployment
metadata:
  name: gwa-webhook
spec:
  template:
    spec:
      imagePullSecrets:
        - name: ghcr-secret   # the GHCR pull secret
      containers:
        - name: webhook
          image: ghcr.io/jaybrto/gwa-webhook:latest   # pinned by CI
"""


def test_rollback_takes_back_manifest_edits_and_the_workflow_it_wrote_even_without_the_local_journal(make_sandbox):
    """The reverse surgical edit restores the manifest byte for byte; the generated workflow goes (unchanged since
    written); and with the laptop's journal lost the cluster's mirror is enough."""
    sb = make_sandbox(servers=1, agents=1, app_repo=True)
    k8s = sb.dir / "k8s"
    k8s.mkdir()
    (k8s / "webhook.yaml").write_text(MANIFEST)
    plan = yaml.safe_load(sb.plan.read_text())
    plan.setdefault("workloads", {})["manifests"] = ["k8s"]
    sb.plan.write_text(yaml.safe_dump(plan))
    workflow = sb.app_repo / ".github" / "workflows" / "build-image.yml"
    assert not workflow.exists()
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (k8s / "webhook.yaml").read_text() != MANIFEST and workflow.is_file()
    for journal in (sb.dir / "xdg-state" / "ghcr2gitea").glob("*.json"):
        journal.unlink()  # the laptop is lost: only the ConfigMap mirror is left
    out = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (k8s / "webhook.yaml").read_text() == MANIFEST
    assert not workflow.exists()


def test_rollback_keeps_a_workflow_edited_since_the_wizard_wrote_it_and_names_it(make_sandbox):
    """The generated CI workflow, once the operator edited it, is theirs: the rollback keeps it as it is and says
    which file it left."""
    sb = make_sandbox(servers=1, agents=1, app_repo=True)
    workflow = sb.app_repo / ".github" / "workflows" / "build-image.yml"
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    edited = workflow.read_text() + "# the team's own step follows\n"
    workflow.write_text(edited)
    out = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert out.returncode == 0, out.stdout + out.stderr
    assert workflow.read_text() == edited
    warned = [line for line in out.stdout.splitlines() if line.strip().startswith("warn ")]
    assert any(str(workflow) in line and "changed since the wizard wrote it" in line for line in warned), out.stdout


def test_rollback_after_a_token_rotation_still_restores_the_original_files(migrated, tmp_path):
    """rotate-token rewrites every node's file (and removes its own backups): the rollback still puts back the
    file as it was before the migration — the first record of a node says how it was, the last what was written."""
    import os

    from sandbox import cluster as C
    sb, before = migrated
    new = "rotated-5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e"
    sb.cluster.gitea.users[C.USERNAME].more_tokens.add(new)
    new_file = tmp_path / "new-token"
    new_file.write_text(new + "\n")
    os.chmod(new_file, 0o600)
    rot = run_cli(sb, "rotate-token", "--plan", str(sb.plan), "--new-token-file", str(new_file), "--yes",
                  "--node-timeout", "20")
    assert rot.returncode == 0, rot.stdout + rot.stderr
    res = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes", "--node-timeout", "20", token=new)
    assert res.returncode == 0, res.stdout + res.stderr
    assert node_files(sb) == before["files"]
    assert new not in res.stdout + res.stderr


def test_the_reverse_of_a_merge_patch_gives_the_object_back():
    from wizard.rollback import _merged
    from wizard.stages.objects import reverse_merge
    live = {"metadata": {"name": "r", "labels": {"team": "ci"}}, "rules": [{"verbs": ["get"]}], "keep": 1}
    merge = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "ghcr2gitea"}},
             "rules": [{"verbs": ["get"]}, {"verbs": ["patch"]}], "added": {"x": 1}}
    assert _merged(_merged(live, merge), reverse_merge(live, merge)) == live


def test_undo_records_fold_first_before_last_written():
    from wizard.rollback import Undo
    u = Undo.of([
        {"what": "node_file", "node": "n1", "had_file": True, "backup": "/b1", "added": ["h"]},
        {"what": "node_file_written", "node": "n1", "sha256": "a" * 64},
        {"what": "node_file", "node": "n1", "had_file": True, "backup": "/b2", "added": []},  # rotate-token
        {"what": "node_file_written", "node": "n1", "sha256": "b" * 64},
        {"what": "workload", "kind": "Deployment", "namespace": "d", "name": "w", "before": {"containers": [1]}},
        {"what": "workload", "kind": "Deployment", "namespace": "d", "name": "w", "before": {"containers": [2]}},
    ])
    assert u.node_files["n1"]["backup"] == "/b1" and u.node_files["n1"]["added"] == ["h"]
    assert u.node_files["n1"]["sha256"] == "b" * 64
    assert u.workloads[("Deployment", "d", "w")] == {"containers": [1]}


THEIRS = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "gitea-proxy-ca", "namespace": "default", "labels": {"team": "payments"}},
          "data": {"ca.crt": "the payments team's CA bundle\n"}}


def migrate_adopting_theirs(sb, api) -> dict:
    """The payments team's ConfigMap where the wizard's proxy CA goes; apply adopts it (``--adopt``). The
    ConfigMap as the migration left it."""
    api.request("POST", "/api/v1/namespaces/default/configmaps", body=THEIRS,
                query={"fieldManager": "kubectl-client-side-apply"}, content_type="application/json")
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20",
                  "--adopt", "ConfigMap/default/gitea-proxy-ca")
    assert res.returncode == 0, res.stdout + res.stderr
    adopted = api.get("ConfigMap", "gitea-proxy-ca", "default")
    assert adopted["data"] != THEIRS["data"]
    return adopted


def test_an_adopted_object_is_left_as_the_migration_made_it_by_default_and_the_rollback_says_so(make_sandbox):
    """The default, --adopted leave: the adopted ConfigMap is neither deleted nor given its old data back, and
    the rollback names it, with the way to restore it."""
    sb = make_sandbox(servers=1, agents=1)
    api = Cluster.connect(str(sb.kubeconfig))
    try:
        adopted = migrate_adopting_theirs(sb, api)
        out = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
        assert out.returncode == 0, out.stdout + out.stderr
        left = api.get("ConfigMap", "gitea-proxy-ca", "default")
        assert left is not None, "an adopted object was deleted"
        assert left["data"] == adopted["data"]
        assert left["metadata"].get("labels") == adopted["metadata"].get("labels")
        assert "left as the migration made them: ConfigMap default/gitea-proxy-ca" in out.stdout, out.stdout
        assert "--adopted restore" in out.stdout
    finally:
        api.close()


def test_an_adopted_object_gets_its_recorded_fields_back_when_the_operator_chooses_restore(make_sandbox):
    """--adopted restore: the ConfigMap the operator let the wizard adopt gets the data and labels it had before."""
    sb = make_sandbox(servers=1, agents=1)
    api = Cluster.connect(str(sb.kubeconfig))
    try:
        migrate_adopting_theirs(sb, api)
        out = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes", "--node-timeout", "20",
                      "--adopted", "restore")
        assert out.returncode == 0, out.stdout + out.stderr
        back = api.get("ConfigMap", "gitea-proxy-ca", "default")
        assert back is not None, "an adopted object was deleted"
        assert back["data"] == THEIRS["data"]
        assert back["metadata"].get("labels") == {"team": "payments"}
    finally:
        api.close()
