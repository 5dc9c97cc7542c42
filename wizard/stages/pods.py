"""The pods stages start and wait for: probe pods, rollout waits, and what a failing pull says about itself."""

from __future__ import annotations

import time

from ..nodeexec import ROLE_LABEL, RUN_LABEL
from .base import Context, StageFailed, failed

PROBE_IMAGE = "curlimages/curl:8.10.1"


def probe_pod(ctx: Context, name: str, script: str, *, namespace: str, extra_spec: dict | None = None,
              purpose: str = "probe", timeout: float = 60) -> tuple[str, str]:
    """Run a short curl script in a plain pod (cluster network view); return (phase, log); the pod is deleted."""
    import secrets as _s
    run = _s.token_hex(3)
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"ghcr2gitea-{name}-{run}", "namespace": namespace,
                        "labels": {ROLE_LABEL: purpose, RUN_LABEL: run}},
           "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "probe", "image": PROBE_IMAGE, "command": ["sh", "-c", script]}],
                    **(extra_spec or {})}}
    if extra_spec and "containers" in extra_spec:
        pod["spec"]["containers"] = extra_spec["containers"]
    cluster = ctx.cluster
    cluster.create(pod, "verify")
    name_ = pod["metadata"]["name"]
    try:
        deadline = time.monotonic() + timeout
        phase = "Pending"
        while time.monotonic() < deadline:
            cur = cluster.get("Pod", name_, namespace)
            phase = (cur or {}).get("status", {}).get("phase", "Pending")
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(0.05)
        log = cluster.pod_log(name_, namespace, "probe") if phase in ("Succeeded", "Failed") else ""
        return phase, log
    finally:
        cluster.delete("Pod", name_, namespace)


def wait_rollout(ctx: Context, kind: str, name: str, namespace: str, stage: str, timeout: float = 120) -> None:
    """Until observedGeneration caught up and every replica is updated and ready; else StageFailed."""
    deadline = time.monotonic() + timeout
    while True:
        obj = ctx.cluster.get(kind, name, namespace) or {}
        st, spec = obj.get("status") or {}, obj.get("spec") or {}
        want = spec.get("replicas", 1)
        if (st.get("observedGeneration", 0) >= obj.get("metadata", {}).get("generation", 1)
                and st.get("updatedReplicas", 0) >= want and st.get("readyReplicas", 0) >= want
                and st.get("replicas", 0) <= want):
            return
        if time.monotonic() > deadline:
            raise StageFailed(failed(f"{kind} {namespace}/{name} rolled out",
                                     f"not ready after {timeout:.0f} s (ready {st.get('readyReplicas', 0)}/{want})"
                                     + pull_failure_hint(ctx, namespace, obj),
                                     f"kubectl -n {namespace} describe {kind.lower()} {name}; fix, then re-run"))
        ctx.say(stage, f"waiting for {kind} {namespace}/{name} ({st.get('readyReplicas', 0)}/{want} ready)")
        time.sleep(0.1)


def pull_failure_hint(ctx: Context, namespace: str, owner: dict) -> str:
    """The newest image pull failure of the owner's pods, explained by the catalogue."""
    from ..diagnose import classify
    sel = ",".join(f"{k}={v}" for k, v in ((owner.get("spec") or {}).get("selector") or {})
                   .get("matchLabels", {}).items())
    if not sel:
        return ""
    from ..cluster import ApiError
    try:
        pods = ctx.cluster.list("Pod", namespace, labels=sel)
    except ApiError as e:  # an in-cluster audit may not read pods (its RBAC): the hint is extra, the finding stands
        if e.status != 403:
            raise
        return f"; its pods' pull errors are not readable here ({e.forbidden})"
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            w = (cs.get("state") or {}).get("waiting") or {}
            if w.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                d = classify(w.get("message", ""))
                return f"; {pod['metadata']['name']}: {w['reason']}" + (f" — {d.cause}" if d else "")
    return ""


