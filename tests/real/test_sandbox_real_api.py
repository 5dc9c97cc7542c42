"""The sandbox's world on a real kube-apiserver (``--api real``): etcd, kube-apiserver and kube-controller-manager
as processes, the simulated k3s nodes as their node agent.

What only this mode can show: the real controller-manager runs the workloads (ReplicaSets, ordered StatefulSet
pods), a real API server's graceful deletion leaves the final delete to the node agent, ``pods/log`` goes from
the API server to the agent's kubelet endpoint, and the world's processes stop with it, by PID. The migration
end to end on this mode is in ``tests/stages/test_engine.py`` (parametrized over both API servers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import poll, require_binary, require_components

from sandbox.realapi import ADMIN_USER

BIN = str(Path(sys.executable).parent / "ghcr2gitea")
REAL = pytest.mark.parametrize("world_api", ["real"], indirect=True)


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (the control plane's etcd, kube-apiserver, controller-manager)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_command_serves_the_same_files_on_a_real_release_and_stops_its_processes(tmp_path):
    require_components("etcd", "kube-apiserver", "kube-controller-manager")
    d = tmp_path / "sb"
    proc = subprocess.Popen([BIN, "sandbox", "--dir", str(d), "--api", "real", "--restart-seconds", "1:1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().rstrip("\n")
        assert first == f"sandbox ready: {d}", proc.stderr.read() if proc.poll() is not None else first
        assert "a real kube-apiserver" in proc.stdout.readline()
        for name in ("kubeconfig", "plan.yaml", "token", "reader-token", "ca.crt", "resolve", "state-url"):
            assert (d / name).is_file(), name
        kubectl = subprocess.run([require_binary("kubectl"), "--kubeconfig", str(d / "kubeconfig"), "--cache-dir",
                                  str(tmp_path / "kcache"), "version", "-o", "json"],
                                 capture_output=True, text=True, timeout=30)
        assert kubectl.returncode == 0, kubectl.stderr
        version = json.loads(kubectl.stdout)["serverVersion"]
        assert version["gitVersion"].startswith("v1.") and "k3s" not in version["gitVersion"]  # the real release
        state = httpx.get((d / "state-url").read_text().strip(), timeout=10).json()
        assert sorted(state["nodes"]) == ["dellmini1", "dellmini2", "dellmini3", "dellmini5", "lenovomini"]
        assert state["api"]["mode"] == "real" and state["api"]["agent_errors"] == []
        # the request log is the API server's audit log, the operator's requests only (the world's are its own)
        assert any(r["path"] == "/version" and r["user"] == ADMIN_USER for r in state["requests"])
        assert {r["user"] for r in state["requests"]} == {ADMIN_USER}
        plane = _children(proc.pid)
        assert len(plane) == 3  # etcd, kube-apiserver, kube-controller-manager
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not [p for p in plane if _alive(p)]  # every process it started is gone


def test_flags_of_the_sandboxs_own_api_are_refused_with_the_real_one(tmp_path):
    res = subprocess.run([BIN, "sandbox", "--dir", str(tmp_path / "sb"), "--api", "real", "--api-fault-rate", "0.1"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "--api-fault-rate" in res.stderr and "--api real" in res.stderr
    assert not (tmp_path / "sb").exists()  # nothing half-written


@REAL
def test_the_controller_manager_runs_the_workloads_and_the_agent_finishes_deleted_pods(sandbox):
    from kubernetes import client

    from wizard.kube import api_client
    api = api_client(str(sandbox.kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    try:
        # the Deployment's pod comes from the controller-manager's ReplicaSet, bound by the agent, Running
        rs = apps.list_namespaced_replica_set("default", label_selector="app=gwa-webhook").items
        assert len(rs) == 1 and rs[0].metadata.owner_references[0].kind == "Deployment"
        (pod,) = poll(lambda: [p for p in core.list_namespaced_pod("default", label_selector="app=gwa-webhook").items
                               if p.status.phase == "Running"], timeout=60, what="gwa-webhook Running")
        assert pod.metadata.owner_references[0].name == rs[0].metadata.name and pod.spec.node_name
        # a client's delete is graceful on a real API server: the pod is marked, and the agent's kubelet makes
        # the final delete (grace 0, its uid); the ReplicaSet replaces it
        core.delete_namespaced_pod(pod.metadata.name, "default")

        def replaced():
            pods = core.list_namespaced_pod("default", label_selector="app=gwa-webhook").items
            return [p for p in pods if p.metadata.uid != pod.metadata.uid and p.status.phase == "Running"] \
                if all(p.metadata.uid != pod.metadata.uid for p in pods) else None
        poll(replaced, timeout=60, what="the deleted pod gone and a new one Running")
        # pods/log: the API server fetches it from the agent's kubelet endpoint
        (gitea,) = core.list_namespaced_pod("gitea-system", label_selector="app.kubernetes.io/name=gitea").items
        assert gitea.metadata.owner_references[0].kind == "StatefulSet"
        state = httpx.get(sandbox.state_url, timeout=10).json()
        assert state["api"]["agent_errors"] == []
    finally:
        api.close()


@REAL
def test_kubectl_reads_logs_and_rollout_status_through_the_real_api_server(sandbox, kubectl):
    res = kubectl("rollout", "status", "deployment/gwa-webhook", "-n", "default", "--timeout=60s")
    assert "successfully rolled out" in res.stdout
    nodes = yaml.safe_load(kubectl("get", "nodes", "-o", "yaml").stdout)["items"]
    assert len(nodes) == 5 and all(n["status"]["nodeInfo"]["kubeletVersion"].endswith("+k3s1") for n in nodes)
    pods = yaml.safe_load(kubectl("get", "pods", "-A", "-o", "yaml").stdout)["items"]
    assert {p["metadata"]["namespace"] for p in pods} >= {"default", "kube-system", "gitea-system"}
    # pods/log: the API server fetches it from the agent's kubelet endpoint, over mutual TLS
    kubectl("run", "hello", "-n", "default", "--image=docker.io/library/busybox:1.36", "--restart=Never",
            "--command", "--", "sh", "-c", "echo hello from the node agent")
    poll(lambda: kubectl("get", "pod", "hello", "-n", "default", "-o", "jsonpath={.status.phase}").stdout
         == "Succeeded", timeout=60, what="the pod Succeeded")
    assert kubectl("logs", "hello", "-n", "default").stdout == "hello from the node agent\n"
    # a running container that wrote nothing: an empty log, as a kubelet answers (not "waiting to start")
    assert kubectl("logs", "-n", "default", "deployment/gwa-webhook").stdout == ""
