"""The engine as a new user meets it: plan, apply and audit on the sandbox, from the command line."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import EXISTING_REGISTRIES, mutating_requests, run_cli, sandbox_state

from sandbox.containerd import REGISTRIES_PATH

EXISTING = EXISTING_REGISTRIES


def plan_args(sb) -> list[str]:
    return ["--plan", str(sb.plan), "--kubeconfig", str(sb.kubeconfig)]


# the end-to-end runs on both API servers: the sandbox's own, and a real kube-apiserver with its controller-manager
BOTH_APIS = pytest.mark.parametrize("world_api", ["sandbox", pytest.param("real", marks=pytest.mark.real)],
                                    indirect=True)


def wizard_pods(state: dict) -> list[str]:
    return [f"{p['namespace']}/{p['name']}" for p in state["pods"]
            if "ghcr2gitea.io/role" in (p.get("labels") or {}) and not p["deleted"]]


@BOTH_APIS
def test_apply_migrates_then_plans_nothing_and_keeps_existing_registries(make_sandbox):
    sb = make_sandbox(existing_registries=EXISTING)
    res = run_cli(sb, "apply", *plan_args(sb), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[11/11] Verify: ok" in res.stdout
    again = run_cli(sb, "plan", *plan_args(sb))
    assert again.returncode == 0, again.stdout
    assert "change(s)" not in again.stdout
    plan = yaml.safe_load(sb.plan.read_text())
    hosts = {plan["registry"]["host"], *plan["registry"]["legacy_hosts"],
             plan["gitea"]["root_url"].split("//")[1].rstrip("/")}
    state = sandbox_state(sb)
    for name, node in state["nodes"].items():
        reg = yaml.safe_load(node["files"][REGISTRIES_PATH])
        assert hosts <= set(reg["configs"]), name
        assert reg["configs"]["quay.example.test"]["auth"]["password"] == "keep-me"  # merged, not clobbered
        assert reg["mirrors"]["docker.io"]["endpoint"] == ["https://mirror.example.test"]
        assert all(reg["configs"][h]["tls"]["insecure_skip_verify"] is True for h in hosts)
        assert node["loaded_registries"] == node["files"][REGISTRIES_PATH], f"{name} did not load the merged file"
        assert len(node["restarts"]) == 1, f"{name} restarted {len(node['restarts'])} times"
        backups = [f for f in node["files"] if f.startswith(REGISTRIES_PATH + ".bak-")]
        assert len(backups) == 1 and yaml.safe_load(node["files"][backups[0]]) == yaml.safe_load(EXISTING)
    assert wizard_pods(state) == []
    # the workloads now run from the Gitea registry
    from kubernetes import client

    from wizard.kube import api_client
    api = api_client(str(sb.kubeconfig))
    pods = client.CoreV1Api(api).list_namespaced_pod("default").items
    gwa = [p for p in pods if p.metadata.name.startswith("gwa-")]
    assert len(gwa) == 3
    for p in gwa:
        assert p.status.phase == "Running"
        assert p.status.container_statuses[0].image_id.startswith(plan["registry"]["host"] + "/jaybrto/")
        assert [s.name for s in p.spec.image_pull_secrets] == ["gitea-registry-secret"]
    api.close()
    # the token never reaches the output
    token = sb.token_file.read_text().strip()
    assert token not in res.stdout + res.stderr + again.stdout


@BOTH_APIS
def test_wrong_token_stops_at_credentials_and_writes_nothing(sandbox):
    res = run_cli(sandbox, "apply", *plan_args(sandbox), "--yes", token="definitely-not-the-token")
    assert res.returncode == 1
    assert "[2/11] Credentials: FAILED" in res.stdout
    assert "cause:" in res.stdout and "fix:" in res.stdout
    assert "definitely-not-the-token" not in res.stdout + res.stderr
    assert [m for m in mutating_requests(sandbox) if "/leases/" not in m and not m.endswith("/leases")] == []


@BOTH_APIS
def test_audit_reports_fresh_then_migrated_without_mutating(make_sandbox):
    sb = make_sandbox()
    res = run_cli(sb, "audit", *plan_args(sb), "--format", "json")
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    assert set(report) == {"cluster", "stages"}
    stage = report["stages"][2]
    assert {"name", "status", "checks"} <= set(stage)
    assert {"name", "status", "cause", "fix", "evidence"} == set(stage["checks"][0])
    assert mutating_requests(sb) == []
    assert run_cli(sb, "apply", *plan_args(sb), "--yes").returncode == 0
    before = len(mutating_requests(sb))
    for fmt in ("json", "markdown", "text"):
        res = run_cli(sb, "audit", *plan_args(sb), "--format", fmt)
        assert res.returncode == 0, res.stdout
    assert len(mutating_requests(sb)) == before
    md = run_cli(sb, "audit", *plan_args(sb), "--format", "markdown").stdout
    assert md.startswith("# ghcr2gitea audit") and "| Credentials | pass |" in md


@BOTH_APIS
def test_a_node_that_never_returns_stops_the_rollout(make_sandbox):
    sb = make_sandbox(never_returns={"dellmini3"}, restart_seconds=(0.3, 0.3))
    res = run_cli(sb, "apply", *plan_args(sb), "--yes", "--node-timeout", "4")
    assert res.returncode == 1
    out = res.stdout
    assert "Rolling restart: FAILED" in out and "dellmini3" in out
    assert "not proven:" in out and "unit restarted" in out
    state = sandbox_state(sb)
    counts = [len(state["nodes"][n]["restarts"]) for n in ("dellmini1", "dellmini3", "dellmini5", "dellmini2",
                                                            "lenovomini")]
    assert counts == [1, 1, 0, 0, 0]


def test_dry_run_shows_order_and_guards_and_changes_nothing(sandbox):
    res = run_cli(sandbox, "apply", *plan_args(sandbox), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "change(s) pending" in res.stdout
    # restart planning needs node facts, which come after registries are written: not in a fresh dry run
    assert [m for m in mutating_requests(sandbox) if "/pods" not in m] == []


@BOTH_APIS
def test_plan_reports_pending_changes_with_exit_3_and_masks_secrets(sandbox):
    res = run_cli(sandbox, "plan", *plan_args(sandbox))
    assert res.returncode == 3, res.stderr
    assert "create Secret default/gitea-registry-push" in res.stdout
    assert "<secret, sha256:" in res.stdout
    token = sandbox.token_file.read_text().strip()
    assert token not in res.stdout


def test_apply_needs_yes_without_a_terminal(sandbox):
    res = run_cli(sandbox, "apply", *plan_args(sandbox))
    assert res.returncode == 2 and "--yes" in res.stderr
    assert mutating_requests(sandbox) == []


def test_second_run_is_told_who_holds_the_lock(sandbox):
    from wizard.cluster import Cluster
    from wizard.lock import ClusterLock
    other = Cluster.connect(str(sandbox.kubeconfig))
    lock = ClusterLock(other)
    lock.me = "alice@laptop pid=1"
    lock.acquire()
    try:
        res = run_cli(sandbox, "apply", *plan_args(sandbox), "--yes")
        assert res.returncode == 2
        assert "alice@laptop" in res.stderr and "since" in res.stderr
    finally:
        lock.release()
        other.close()
