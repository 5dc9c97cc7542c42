"""Faults: the wizard SIGKILLed at every step boundary and mid-restart, API faults, bad input.

Every scenario's outcome is recorded; tests/reliability/conftest.py renders them into
docs/reliability.md (GHCR2GITEA_WRITE_RELIABILITY=1), so that page is produced from the
suite's results, not written by hand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import mutating_requests, run_cli, sandbox_state

from sandbox.containerd import REGISTRIES_PATH
from wizard.stages import STAGES

EXISTING = """configs:
  "quay.example.test":
    auth:
      username: robot
      password: keep-me
"""
FAST = dict(restart_seconds=(0.2, 0.3), existing_registries=EXISTING)
KILL_POINTS = ([f"before:{s.key}" for s in STAGES] + [f"after:{s.key}" for s in STAGES]
               + [f"restart:{n}" for n in ("dellmini1", "dellmini3", "dellmini5", "dellmini2", "lenovomini")])


def snapshot(sb) -> dict:
    """What 'the same final cluster' means: the wizard's objects, the workloads, every node's files."""
    from kubernetes import client

    from wizard.kube import api_client
    api = api_client(str(sb.kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    sel = "app.kubernetes.io/managed-by=ghcr2gitea"
    objects = sorted(
        [f"Secret {o.metadata.namespace}/{o.metadata.name}" for o in core.list_secret_for_all_namespaces(
            label_selector=sel).items]
        + [f"ConfigMap {o.metadata.namespace}/{o.metadata.name}" for o in core.list_config_map_for_all_namespaces(
            label_selector=sel).items if o.metadata.name != "ghcr2gitea-journal"]
        + [f"Service {o.metadata.namespace}/{o.metadata.name}" for o in core.list_service_for_all_namespaces(
            label_selector=sel).items]
        + [f"Deployment {o.metadata.namespace}/{o.metadata.name}" for o in apps.list_deployment_for_all_namespaces(
            label_selector=sel).items])
    workloads = sorted((d.metadata.name, d.spec.template.spec.containers[0].image,
                        tuple(s.name for s in d.spec.template.spec.image_pull_secrets or []))
                       for d in apps.list_namespaced_deployment("default").items
                       + apps.list_namespaced_stateful_set("default").items)
    api.close()
    state = sandbox_state(sb)
    nodes = {}
    for name, n in state["nodes"].items():
        reg = yaml.safe_load(n["files"].get(REGISTRIES_PATH) or "") or {}
        nodes[name] = {"hosts": sorted(reg.get("configs") or {}), "loaded": n["loaded_registries"] ==
                       n["files"].get(REGISTRIES_PATH), "restarts": len(n["restarts"]),
                       "kept": (reg.get("configs") or {}).get("quay.example.test", {}).get("auth", {})
                       .get("password") == "keep-me"}
    pods = [p["name"] for p in state["pods"] if "ghcr2gitea.io/role" in (p.get("labels") or {}) and not p["deleted"]]
    return {"objects": objects, "workloads": workloads, "nodes": nodes, "wizard_pods": pods}


def normalise(snap: dict, sb) -> dict:
    port = sb.opts.public_port
    return yaml.safe_load(yaml.safe_dump(snap).replace(str(port), "PORT"))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    from helpers import fast_options

    from sandbox.server import Sandbox
    sb = Sandbox(tmp_path_factory.mktemp("baseline"), fast_options(**FAST)).start()
    try:
        res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes")
        assert res.returncode == 0, res.stdout + res.stderr
        return normalise(snapshot(sb), sb)
    finally:
        sb.stop()


# on a real kube-apiserver: a stage boundary after the first writes, mid-restart of the node that serves the API
# (the wizard dies while the API is away) and of an agent, and after the workloads roll out through the real
# controller-manager; the final cluster must be the sandbox API's uninterrupted baseline, object for object
REAL_KILL_POINTS = ["after:secrets", "restart:dellmini1", "restart:lenovomini", "after:workloads"]


@pytest.mark.parametrize(("world_api", "point"), [("sandbox", p) for p in KILL_POINTS] + [
    pytest.param("real", p, marks=pytest.mark.real, id=f"real-{p}") for p in REAL_KILL_POINTS], indirect=["world_api"])
def test_killed_at_every_step_then_resumed(world_api, point, baseline, make_sandbox, reliability, tmp_path):
    sb = make_sandbox(**FAST)
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    first = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", env={**env, "GHCR2GITEA_KILL_AT": point})
    assert first.returncode == -signal.SIGKILL, f"the run was not killed at {point}: {first.stdout[-500:]}"
    second = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    # the journal starts with the run's first change: a run killed before it left nothing to resume
    before_first_write = point in ("before:preflight", "after:preflight", "before:credentials",
                                   "after:credentials", "before:secrets")
    assert ("resuming an unfinished migration" in second.stdout) != before_first_write, second.stdout[:300]
    final = normalise(snapshot(sb), sb)
    assert final == baseline
    start = ("nothing had been written yet, so no journal: the rerun started afresh" if before_first_write
             else "the rerun resumed from the journal")
    on = " on a real kube-apiserver" if world_api == "real" else ""
    reliability.record("SIGKILL", f"killed at `{point}`{on}, then `apply` run again",
                       f"{start}; final cluster identical to an uninterrupted run; every node restarted once; "
                       "existing registries.yaml entries kept; no wizard pod left")


def test_api_faults_are_retried_and_the_migration_completes(make_sandbox, reliability):
    sb = make_sandbox(api_fault_rate=0.08, seed=7, **FAST)
    t0 = time.monotonic()
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--api-timeout", "2", timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    assert "retrying" in res.stderr  # the retries are visible, not silent (on stderr: stdout is the report)
    import httpx
    httpx.post(f"{sb.api_url}/_sandbox/faults", json={"api_fault_rate": 0.0}, verify=False)  # the test's own reads
    snap = snapshot(sb)
    assert all(n["restarts"] == 1 and n["loaded"] and n["kept"] for n in snap["nodes"].values())
    assert snap["wizard_pods"] == []
    assert time.monotonic() - t0 < 600
    reliability.record("API faults", "8% of API requests answered 500/503, timed out, or watches dropped",
                       "retried with backoff (visible on stderr as 'note: API … retrying …' lines); migration completed with "
                       "every node restarted once")


def test_persistent_outage_ends_clearly_and_resumably(make_sandbox, reliability, tmp_path):
    sb = make_sandbox(**FAST)
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", env={**env, "GHCR2GITEA_KILL_AT": "before:proxy"}
                   ).returncode == -signal.SIGKILL
    import httpx
    httpx.post(f"{sb.api_url}/_sandbox/faults", json={"api_fault_rate": 1.0}, verify=False)
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--api-patience", "3", "--api-timeout", "1", env=env)
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "unreachable" in err[0] or "HTTP 5" in res.stderr or "50" in err[0], res.stderr
    assert "Traceback" not in res.stderr
    httpx.post(f"{sb.api_url}/_sandbox/faults", json={"api_fault_rate": 0.0}, verify=False)
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", env=env)
    assert res.returncode == 0, res.stdout
    reliability.record("API outage", "every API request fails for longer than --api-patience",
                       "one-line error, exit 2, no traceback; the next run resumed and finished")


def test_audit_makes_no_mutating_request_even_with_faults(make_sandbox, reliability):
    sb = make_sandbox(api_fault_rate=0.2, seed=3, **FAST)
    for fmt in ("json", "text"):
        res = run_cli(sb, "audit", "--plan", str(sb.plan), "--format", fmt, "--api-timeout", "2", timeout=300)
        assert res.returncode in (0, 1, 2)
    assert mutating_requests(sb) == []
    reliability.record("audit under faults", "audit with 20% of API requests failing",
                       "zero mutating requests in the sandbox's request log")


def test_watch_expiry_410_is_relisted(make_sandbox, reliability):
    """A rollout whose watches hit 410 Gone (history compacted) still finishes."""
    sb = make_sandbox(restart_seconds=(0.5, 0.5))
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(KUBECONFIG=str(sb.kubeconfig), GITEA_TOKEN=sb.token_file.read_text().strip())
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ghcr2gitea"), "apply", "--plan", str(sb.plan),
                             "--yes"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import httpx
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                httpx.post(f"{sb.api_url}/_sandbox/compact", verify=False, timeout=2)
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-1500:] + err
    reliability.record("watch 410", "etcd history compacted every 100 ms during the whole run",
                       "watches relisted; migration completed")
