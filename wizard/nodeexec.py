"""Running a short script on a node through a privileged ``nsenter`` pod (no SSH needed).

The pods follow the design's rules: pinned by ``nodeName``, labelled as the wizard's, a
minimal command, deleted afterwards; pods a crash left behind are found by label and
removed before new work starts (``sweep``).
"""

from __future__ import annotations

import secrets as _secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .cluster import STAGE_LABEL, ApiError, Cluster
from .kube import ClusterUnreachable
from .script import Script

ROLE_LABEL = "ghcr2gitea.io/role"
RUN_LABEL = "ghcr2gitea.io/run"
WIZARD_POD_SELECTOR = "app.kubernetes.io/managed-by=ghcr2gitea,ghcr2gitea.io/role"
NSENTER = ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "--", "sh", "-c"]  # + the script: all a node pod runs


@dataclass(frozen=True)
class NodeResult:
    node: str
    exit_code: int | None  # None: did not finish in time
    output: str
    phase: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def pod_manifest(node: str, script: str | Script, *, namespace: str, image: str, stage: str, purpose: str,
                 run_id: str, env: list[dict] | None = None) -> dict:
    """The privileged nsenter pod; the script is one argv word of ``sh -c`` (a ``Script`` brings its env)."""
    if isinstance(script, Script):
        env = [*script.env, *(env or [])]
        script = script.text()
    name = f"ghcr2gitea-{purpose}-{node}"[:52].rstrip("-.") + f"-{run_id[:6]}"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {ROLE_LABEL: purpose, RUN_LABEL: run_id, STAGE_LABEL: stage,
                                "app.kubernetes.io/managed-by": "ghcr2gitea"}},
        "spec": {
            "nodeName": node, "restartPolicy": "Never", "hostPID": True,
            "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "nsenter", "image": image, "imagePullPolicy": "IfNotPresent",
                "securityContext": {"privileged": True},
                "command": [*NSENTER, script],
                **({"env": env} if env else {}),
            }],
        },
    }


@dataclass(frozen=True)
class Sweep:
    removed: list[str]  # "namespace/name" of the leftover wizard pods deleted
    left_alone: list[str]  # "namespace/name (why)" of pods with the wizard's labels that are not its pods


def not_ours(pod: dict, namespace: str, image: str) -> str:
    """Why a pod with the wizard's labels is not one of its node pods ("" when it is, by labels and spec shape)."""
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    labels = md.get("labels") or {}
    if md.get("namespace") != namespace:
        return f"not in the wizard namespace {namespace}"
    if labels.get("app.kubernetes.io/managed-by") != "ghcr2gitea" or not labels.get(ROLE_LABEL) \
            or not labels.get(RUN_LABEL):
        return "labels differ"
    containers = spec.get("containers") or []
    if not spec.get("nodeName") or spec.get("restartPolicy") != "Never" or not spec.get("hostPID") \
            or len(containers) != 1 or spec.get("initContainers"):
        return "spec differs"
    c = containers[0]
    if c.get("image") != image:
        return f"image {c.get('image')!r} is not the plan's helper image"
    cmd = c.get("command") or []
    if cmd[:len(NSENTER)] != NSENTER or len(cmd) != len(NSENTER) + 1 or c.get("args"):
        return "command is not the wizard's nsenter command"
    if (c.get("securityContext") or {}).get("privileged") is not True:
        return "not privileged"
    return ""


class NodeExec:
    """Runs scripts on nodes, in parallel, and cleans up after itself."""

    def __init__(self, cluster: Cluster, *, namespace: str, image: str):
        self.cluster = cluster
        self.namespace = namespace
        self.image = image

    def sweep(self) -> Sweep:
        """Delete wizard pods an earlier crash left behind: only in the wizard's namespace, and only pods whose
        labels AND spec are what pod_manifest builds with this plan's helper image. Anything else that merely
        carries the labels is left alone (and named, so the operator can look)."""
        removed, left_alone = [], []
        for pod in self.cluster.list("Pod", None, labels=WIZARD_POD_SELECTOR):
            md = pod["metadata"]
            where = f"{md['namespace']}/{md['name']}"
            why = not_ours(pod, self.namespace, self.image)
            if why:
                left_alone.append(f"{where} ({why})")
            elif self.cluster.delete("Pod", md["name"], md["namespace"]):
                removed.append(where)
        return Sweep(removed, left_alone)

    def run(self, node: str, script: str | Script, *, stage: str, purpose: str = "exec", timeout: float = 60) -> NodeResult:
        return self.run_many({node: script}, stage=stage, purpose=purpose, timeout=timeout)[node]

    def start(self, node: str, script: str | Script, *, stage: str, purpose: str) -> str:
        """Create the pod and return its name without waiting (e.g. a restart that takes the kubelet away)."""
        run_id = _secrets.token_hex(4)
        pod = pod_manifest(node, script, namespace=self.namespace, image=self.image, stage=stage, purpose=purpose,
                           run_id=run_id)
        self.cluster.create(pod, stage)
        return pod["metadata"]["name"]

    def run_many(self, scripts: dict[str, str | Script], *, stage: str, purpose: str = "exec", timeout: float = 60,
                 env: dict[str, list[dict]] | None = None) -> dict[str, NodeResult]:
        """Run each node's script at once; ``env`` (per node) may reference Secrets so no secret is in a spec."""
        run_id = _secrets.token_hex(4)
        pods = {node: pod_manifest(node, script, namespace=self.namespace, image=self.image, stage=stage,
                                   purpose=purpose, run_id=run_id, env=(env or {}).get(node))
                for node, script in scripts.items()}
        names = {node: pod["metadata"]["name"] for node, pod in pods.items()}
        with ThreadPoolExecutor(max_workers=min(16, len(pods)) or 1) as pool:
            list(pool.map(lambda pod: self.cluster.create(pod, stage), pods.values()))
        try:
            phases = self._wait(run_id, set(names.values()), timeout)
            results = {}

            def collect(node: str) -> NodeResult:
                name = names[node]
                phase, code = phases.get(name, ("Pending", None))
                try:
                    out = self.cluster.pod_log(name, self.namespace) if phase in ("Succeeded", "Failed") else ""
                except ApiError:
                    out = ""
                return NodeResult(node, code, out, phase)
            with ThreadPoolExecutor(max_workers=min(16, len(names)) or 1) as pool:
                for r in pool.map(collect, names):
                    results[r.node] = r
            return results
        finally:
            self.cleanup(run_id)

    def cleanup(self, run_id: str | None = None, names: list[str] | None = None) -> None:
        targets = names or [p["metadata"]["name"] for p in self.cluster.list(
            "Pod", self.namespace, labels=f"{RUN_LABEL}={run_id}")]
        with ThreadPoolExecutor(max_workers=min(16, len(targets)) or 1) as pool:
            list(pool.map(lambda n: self.cluster.delete("Pod", n, self.namespace), targets))

    def _wait(self, run_id: str, names: set[str], timeout: float) -> dict[str, tuple[str, int | None]]:
        """Watch the run's pods until every one has finished (or the deadline passes)."""
        deadline = time.monotonic() + timeout
        done: dict[str, tuple[str, int | None]] = {}
        selector = f"{RUN_LABEL}={run_id}"
        while time.monotonic() < deadline and len(done) < len(names):
            try:
                items, rv = self.cluster.list_with_rv("Pod", self.namespace, labels=selector)
                for p in items:
                    _record(p, done)
                if len(done) >= len(names):
                    break
                left = max(1, int(deadline - time.monotonic()))
                for etype, p in self.cluster.watch("Pod", self.namespace, resource_version=rv, labels=selector,
                                                   timeout=min(left, 30)):
                    if etype in ("ADDED", "MODIFIED"):
                        _record(p, done)
                    if len(done) >= len(names) or time.monotonic() >= deadline:
                        break
            except (ApiError, ClusterUnreachable, OSError):
                time.sleep(0.1)
            except Exception:  # noqa: BLE001 - a watch dropped mid-stream: relist
                time.sleep(0.05)
        return done


def _record(pod: dict, done: dict) -> None:
    st = pod.get("status") or {}
    if st.get("phase") in ("Succeeded", "Failed"):
        code = None
        for cs in st.get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if term:
                code = term.get("exitCode")
        done[pod["metadata"]["name"]] = (st["phase"], code if code is not None else (0 if st["phase"] ==
                                                                                    "Succeeded" else 1))
