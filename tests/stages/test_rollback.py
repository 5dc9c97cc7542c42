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
from helpers import EXISTING_REGISTRIES, run_cli, sandbox_state

from sandbox.containerd import REGISTRIES_PATH
from wizard.cluster import Cluster

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


def node_files(sb) -> dict:
    return {n: v["files"].get(REGISTRIES_PATH) for n, v in sandbox_state(sb)["nodes"].items()}


def restarts(sb) -> dict:
    return {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()}


@pytest.fixture
def migrated(make_sandbox):
    sb = make_sandbox(servers=1, agents=1, existing_registries=EXISTING)
    before = {"files": node_files(sb), "templates": pod_templates(sb), "objects": wizard_objects(sb)}
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
    res = run_cli(sb, "rollback", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "images copied to Gitea stay" in res.stdout
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
