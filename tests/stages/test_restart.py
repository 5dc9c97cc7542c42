"""The rolling restart: proven, ordered, and safe to resume after the wizard is killed mid-node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import poll, run_cli, sandbox_state


def wizard_pods(state: dict) -> list[str]:
    return [p["name"] for p in state["pods"] if "ghcr2gitea.io/role" in (p.get("labels") or {}) and not p["deleted"]]


def test_servers_first_one_at_a_time_each_once(make_sandbox):
    sb = make_sandbox(restart_seconds=(0.4, 0.8))
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes")
    assert res.returncode == 0, res.stdout
    nodes = sandbox_state(sb)["nodes"]
    assert all(len(n["restarts"]) == 1 for n in nodes.values())
    servers = sorted((n["restarts"][0] for n in nodes.values() if n["role"] == "server"), key=lambda r: r["start"])
    agents = [n["restarts"][0] for n in nodes.values() if n["role"] == "agent"]
    assert all(a["end"] <= b["start"] for a, b in zip(servers, servers[1:], strict=False)), "two servers down at once"
    assert max(r["start"] for r in servers) < min(r["start"] for r in agents), "an agent before a server"
    for line in ("dellmini1: restarted and proven", "lenovomini: restarted and proven"):
        assert line in res.stdout
    queued = [ln for ln in res.stdout.splitlines() if ": queued" in ln]
    assert queued and not [ln for ln in res.stdout.splitlines() if "))" in ln]  # no doubled parentheses


def test_agents_in_batches_with_max_unavailable(make_sandbox):
    sb = make_sandbox(servers=1, agents=6, restart_seconds=(0.5, 0.5))
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--max-unavailable", "3")
    assert res.returncode == 0, res.stdout
    nodes = sandbox_state(sb)["nodes"]
    agents = sorted((n["restarts"][0] for n in nodes.values() if n["role"] == "agent"), key=lambda r: r["start"])
    overlapping = max(sum(1 for b in agents if b["start"] < a["end"] and b["end"] > a["start"]) for a in agents)
    assert 2 <= overlapping <= 3


def test_killed_mid_restart_then_resumed(make_sandbox, tmp_path):
    sb = make_sandbox(restart_seconds=(1.0, 1.0))
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(KUBECONFIG=str(sb.kubeconfig), GITEA_TOKEN=sb.token_file.read_text().strip())
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ghcr2gitea"), "apply", "--plan", str(sb.plan),
                             "--yes"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(lambda: (r := sandbox_state(sb)["nodes"]["dellmini3"]["restarts"]) and r[0]["end"] is None,
             timeout=60, what="dellmini3 restarting")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert wizard_pods(sandbox_state(sb)), "the killed run should have left its pods (else the test proves nothing)"
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "removed wizard pods an earlier run left behind" in res.stdout
    state = sandbox_state(sb)
    assert {n: len(v["restarts"]) for n, v in state["nodes"].items()} == dict.fromkeys(state["nodes"], 1)
    assert wizard_pods(state) == []
    assert all(v["loaded_registries"] == v["files"]["/etc/rancher/k3s/registries.yaml"]
               for v in state["nodes"].values())
