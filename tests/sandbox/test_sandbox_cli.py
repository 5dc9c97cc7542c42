"""``ghcr2gitea sandbox`` as a process: what it prints, what it writes, how it stops, how it refuses bad flags."""

from __future__ import annotations

import os
import selectors
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client

from wizard.kube import api_client

BIN = str(Path(sys.executable).parent / "ghcr2gitea")


def start(directory: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """Start the command; (process, its first stdout line) once it printed one."""
    proc = subprocess.Popen([BIN, "sandbox", "--dir", str(directory), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout=30):
            proc.kill()
            raise AssertionError("no output within 30 s")
        line = proc.stdout.readline()
    finally:
        sel.close()
    if not line:
        proc.wait(5)
        raise AssertionError(f"exited {proc.returncode} before printing: {proc.stderr.read()}")
    return proc, line.rstrip("\n")


def stop(proc: subprocess.Popen, sig: int, timeout: float = 5.0) -> tuple[int, float, str, str]:
    """Send ``sig``; (exit code, seconds it took, rest of stdout, stderr)."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"still running {timeout} s after signal {sig}") from None
    return proc.returncode, time.monotonic() - t0, out, err


@pytest.fixture
def running(tmp_path):
    started = []

    def run(*args: str) -> tuple[subprocess.Popen, str, Path]:
        d = tmp_path / "sb"
        proc, line = start(d, "--restart-seconds", "1:1", *args)
        started.append(proc)
        return proc, line, d
    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ready_line_files_and_sigterm(running):
    proc, first, d = running()
    assert first == f"sandbox ready: {d}"
    for name in ("kubeconfig", "plan.yaml", "token", "ca.crt", "resolve"):
        assert (d / name).is_file(), name
    assert mode(d / "token") == 0o600
    assert mode(d / "kubeconfig") == 0o600
    token = (d / "token").read_text().strip()
    assert len(token) >= 20
    plan_text = (d / "plan.yaml").read_text()
    assert token not in plan_text  # the plan never holds the secret
    plan = yaml.safe_load(plan_text)
    assert plan["registry"]["host"].startswith("registry.example.test:")

    # the kubeconfig works with the real client, and /_sandbox/state needs no auth
    kubeconfig = yaml.safe_load((d / "kubeconfig").read_text())
    server = kubeconfig["clusters"][0]["cluster"]["server"]
    st = httpx.get(f"{server}/_sandbox/state", verify=False, timeout=5)
    assert st.status_code == 200
    assert sorted(st.json()["nodes"]) == ["dellmini1", "dellmini2", "dellmini3", "dellmini5", "lenovomini"]
    assert httpx.get(f"{server}/api/v1/nodes", verify=False, timeout=5).status_code == 401
    api = api_client(str(d / "kubeconfig"))
    try:
        assert len(client.CoreV1Api(api).list_node().items) == 5
    finally:
        api.close()

    rc, took, out, err = stop(proc, signal.SIGTERM)
    assert rc == 0, err
    assert took < 5
    assert not [ln for ln in out.splitlines() if ln.startswith("sandbox ready")]  # printed once, first
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server}/_sandbox/state", verify=False, timeout=2)


def test_restart_seconds_flag_is_applied(running):
    proc, _, d = running()
    api = api_client(str(d / "kubeconfig"))
    try:
        v1 = client.CoreV1Api(api)
        server = yaml.safe_load((d / "kubeconfig").read_text())["clusters"][0]["cluster"]["server"]
        v1.create_namespaced_pod("default", {"metadata": {"name": "restart"}, "spec": {
            "nodeName": "dellmini2", "restartPolicy": "Never", "hostPID": True, "containers": [{
                "name": "x", "image": "alpine:3.20", "securityContext": {"privileged": True},
                "command": ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "--", "sh", "-c",
                            "systemctl restart k3s-agent && echo done"]}]}})
        deadline = time.monotonic() + 10
        while v1.read_namespaced_pod("restart", "default").status.phase != "Succeeded":
            assert time.monotonic() < deadline, "restart pod did not finish"
            time.sleep(0.1)
        (r,) = httpx.get(f"{server}/_sandbox/state", verify=False, timeout=5).json()["nodes"]["dellmini2"]["restarts"]
        assert r["end"] - r["start"] == pytest.approx(1.0, abs=0.3)
    finally:
        api.close()
    assert stop(proc, signal.SIGTERM)[0] == 0


def test_systemd_version_time_zone_and_server_start_up_are_applied(running):
    proc, _, d = running("--systemd-version", "245", "--node-timezone", "Asia/Tokyo",
                         "--server-restart-seconds", "2:2")
    api = api_client(str(d / "kubeconfig"))
    script = ("systemctl restart k3s; systemctl show k3s -p ActiveEnterTimestamp --value; date; "
              "stat -c %y /etc/hostname; systemctl show k3s -p ActiveEnterTimestamp --value --timestamp=us+utc "
              "|| echo refused")
    try:
        v1 = client.CoreV1Api(api)
        server = yaml.safe_load((d / "kubeconfig").read_text())["clusters"][0]["cluster"]["server"]
        v1.create_namespaced_pod("default", {"metadata": {"name": "restart"}, "spec": {
            "nodeName": "dellmini3", "restartPolicy": "Never", "hostPID": True, "containers": [{
                "name": "x", "image": "alpine:3.20", "securityContext": {"privileged": True},
                "command": ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "--", "sh", "-c", script]}]}})
        deadline = time.monotonic() + 15
        while v1.read_namespaced_pod("restart", "default").status.phase != "Succeeded":
            assert time.monotonic() < deadline, "restart pod did not finish"
            time.sleep(0.1)
        log = v1.read_namespaced_pod_log("restart", "default", container="x").splitlines()
        (r,) = httpx.get(f"{server}/_sandbox/state", verify=False, timeout=5).json()["nodes"]["dellmini3"]["restarts"]
    finally:
        api.close()
    assert r["end"] - r["start"] == pytest.approx(2.0, abs=0.3)  # the server's start-up, not --restart-seconds
    assert r["end"] - r["kubelet"] == pytest.approx(1.5, abs=0.3)  # its kubelet was up long before READY
    assert log[0].endswith(" JST") and " JST " in log[1] and log[2].endswith(" +0900"), log
    assert sorted(log[3:]) == ["refused", "systemctl: unrecognized option '--timestamp=us+utc'"], log
    assert stop(proc, signal.SIGTERM)[0] == 0


def test_k3s_version_is_what_the_nodes_report_and_generate(running):
    proc, _, d = running("--k3s-version", "v1.25.16+k3s4", "--servers", "1", "--agents", "1")
    api = api_client(str(d / "kubeconfig"))
    try:
        nodes = client.CoreV1Api(api).list_node().items
    finally:
        api.close()
    assert {n.status.node_info.kubelet_version for n in nodes} == {"v1.25.16+k3s4"}
    assert {n.status.node_info.container_runtime_version for n in nodes} == {"containerd://1.7.7-k3s1"}
    assert stop(proc, signal.SIGTERM)[0] == 0


@pytest.mark.parametrize("flag, preloaded", [((), False), (("--gitea-preloaded",), True),
                                             (("--no-gitea-preloaded",), False)])
def test_gitea_preloaded_flag_decides_what_gitea_holds(running, flag, preloaded):
    proc, _, d = running(*flag)
    server = yaml.safe_load((d / "kubeconfig").read_text())["clusters"][0]["cluster"]["server"]
    state_url = (d / "state-url").read_text().strip()  # the state's address, as every API mode writes it
    assert state_url == f"{server}/_sandbox/state"
    registries = httpx.get(state_url, verify=False, timeout=5).json()["registries"]
    names = ("github-workflow-agents", "gwa-orchestrator", "gwa-webhook")
    assert all(f"jaybrto/{n}:latest" in registries["ghcr"] for n in names)
    if preloaded:  # the same bytes as on GHCR: the same digests
        assert registries["gitea"] == {f"jaybrto/{n}:latest": registries["ghcr"][f"jaybrto/{n}:latest"] for n in names}
    else:
        assert registries["gitea"] == {}
    assert mode(d / "ghcr-token") == 0o600 and (d / "public-ca.crt").is_file()
    assert stop(proc, signal.SIGTERM)[0] == 0


def test_sigint_exits_zero(running):
    proc, first, d = running()
    assert first == f"sandbox ready: {d}"
    rc, took, out, err = stop(proc, signal.SIGINT)
    assert rc == 0, err
    assert took < 5
    assert "Traceback" not in err


@pytest.mark.parametrize(("args", "flag"), [
    (["--restart-seconds", "5:1"], "--restart-seconds"),
    (["--never-returns", "nosuchnode"], "--never-returns"),
    (["--api-fault-rate", "2"], "--api-fault-rate"),
    (["--restart-seconds", "soon"], "--restart-seconds"),
    (["--api-fault-rate", "-0.5"], "--api-fault-rate"),
    (["--server-restart-seconds", "9:1"], "--server-restart-seconds"),
    (["--systemd-version", "new"], "--systemd-version"),
    (["--node-timezone", "Mars/Olympus_Mons"], "--node-timezone"),
    (["--k3s-version", "1.29.3"], "--k3s-version"),
    (["--openrc", "nosuchnode"], "--openrc"),
    (["--agent-unit-type", "simple"], "--agent-unit-type"),
    (["--k3s-version", "v1.29.3+k3s1; rm -rf /"], "--k3s-version"),
    (["--k3s-version", "v2.29.3+k3s1"], "--k3s-version"),
    (["--pod-start-seconds", "2:1"], "--pod-start-seconds"),
    (["--pod-start-seconds", "quick"], "--pod-start-seconds"),
    (["--restart-seconds", "nan"], "--restart-seconds"),
    (["--readyz-lag-seconds", "-1"], "--readyz-lag-seconds"),
    (["--readyz-lag-seconds", "nan"], "--readyz-lag-seconds"),
    (["--log-gap-seconds", "soon"], "--log-gap-seconds"),
])
def test_bad_flags_are_refused_before_anything_is_written(tmp_path, args, flag):
    d = tmp_path / "sb"
    res = subprocess.run([BIN, "sandbox", "--dir", str(d), *args], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert res.stdout == ""
    # argparse's usage block aside, exactly one line: the message, naming the flag
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1, res.stderr
    assert flag in lines[0]
    assert "Traceback" not in res.stderr
    assert not d.exists() or not any(d.iterdir())


def test_no_ready_line_without_dir(tmp_path):
    res = subprocess.run([BIN, "sandbox"], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert res.returncode != 0 and "--dir" in res.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("args", "want"), [
    ([], {"pod_start_seconds": (0.0, 0.0), "readyz_lag_seconds": 0.0, "log_gap_seconds": 0.0,
          "server_restart_seconds": None}),
    (["--realistic"], {"pod_start_seconds": (0.5, 1.5), "readyz_lag_seconds": 1.0, "log_gap_seconds": 1.0,
                       "server_restart_seconds": (20.0, 30.0)}),
    (["--realistic", "--pod-start-seconds", "0", "--server-restart-seconds", "5:6"],
     {"pod_start_seconds": (0.0, 0.0), "readyz_lag_seconds": 1.0, "server_restart_seconds": (5.0, 6.0)}),
])
def test_realistic_gives_a_real_clusters_timeline_and_each_flag_still_wins(args, want):
    from ghcr2gitea.cli import build_parser, sandbox_options
    opts = sandbox_options(build_parser().parse_args(["sandbox", "--dir", "x", *args]))
    assert {k: getattr(opts, k) for k in want} == want
