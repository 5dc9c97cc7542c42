"""Workloads [Step 6], CI and RBAC [Steps 7–8], and Verify [Step 9]."""

from __future__ import annotations

import time

from .. import authflow
from ..diagnose import BY_KEY, classify
from ..plan import Plan
from .base import Change, Check, Context, Stage, StageFailed, failed, object_diff, passed, skipped
from .objects import ObjectStage
from .preflight import discover_nodes
from .proxy_ingress import probe_pod, wait_rollout

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def rewrite_image(image: str, plan: Plan) -> str | None:
    """The Gitea reference for a GHCR image of the plan (tag or digest kept), else None."""
    for img in plan.images:
        if image == img.source or image.startswith(img.source + ":") or image.startswith(img.source + "@"):
            return img.target + image[len(img.source):]
    return None


def pod_spec_patch(spec: dict, plan: Plan) -> dict:
    """Strategic-merge patch of a pod spec: containers by name, imagePullSecrets replaced."""
    patch: dict = {}
    for key in ("initContainers", "containers"):
        changed = [{"name": c["name"], "image": new} for c in spec.get(key) or []
                   if (new := rewrite_image(c.get("image", ""), plan))]
        if changed:
            patch[key] = changed
    secrets = [s.get("name") for s in spec.get("imagePullSecrets") or []]
    if plan.old_pull_secret in secrets or (patch and plan.pull_secret not in secrets):
        items = [] if plan.pull_secret in secrets else [{"name": plan.pull_secret}]
        if plan.old_pull_secret in secrets:
            items.append({"name": plan.old_pull_secret, "$patch": "delete"})  # strategic merge: drop by name
        patch["imagePullSecrets"] = items
    return patch


def pull_secrets_after(spec: dict, patch: dict, plan: Plan) -> list[dict]:
    names = [s.get("name") for s in spec.get("imagePullSecrets") or []]
    if "imagePullSecrets" in patch:
        names = [n for n in names if n != plan.old_pull_secret] + ([] if plan.pull_secret in names
                                                                    else [plan.pull_secret])
    return [{"name": n} for n in names]


class Workloads(Stage):
    key, title, guide_step = "workloads", "Workloads", "Step 6"
    description = ("Points the live workloads at the Gitea registry: every container image from the plan's GHCR "
                   "images (tags and digests kept) and the imagePullSecrets entry, patched on the container by name, "
                   "then waits for each rollout and explains a failed pull.")

    def inspect(self, ctx: Context) -> dict:
        found = []
        for kind in WORKLOAD_KINDS:
            for obj in ctx.cluster.list(kind, ctx.plan.workloads_namespace):
                patch = pod_spec_patch(obj["spec"]["template"]["spec"], ctx.plan)
                found.append((kind, obj, patch))
        return {"workloads": found}

    def plan(self, ctx: Context, observed: dict) -> list[Change]:
        changes = []
        for kind, obj, patch in observed["workloads"]:
            if not patch:
                continue
            md = obj["metadata"]
            target = f"{kind} {md['namespace']}/{md['name']}"
            before = {"containers": [{"name": c["name"], "image": c["image"]} for c in
                                     obj["spec"]["template"]["spec"].get("containers", [])],
                      "imagePullSecrets": obj["spec"]["template"]["spec"].get("imagePullSecrets", [])}
            after = {"containers": [{"name": c["name"], "image": rewrite_image(c["image"], ctx.plan) or c["image"]}
                                    for c in obj["spec"]["template"]["spec"].get("containers", [])],
                     "imagePullSecrets": pull_secrets_after(obj["spec"]["template"]["spec"], patch, ctx.plan)}
            changes.append(Change(target, "update", object_diff(before, after, target),
                                  (kind, md["name"], md["namespace"], patch)))
        return changes

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        for ch in changes:
            kind, name, ns, patch = ch.payload
            ctx.say(self.key, f"patch {ch.target}")
            ctx.cluster.patch(kind, name, ns, {"spec": {"template": {"spec": patch}}})
        for ch in changes:
            kind, name, ns, _ = ch.payload
            if kind != "DaemonSet":
                wait_rollout(ctx, kind, name, ns, self.key, timeout=max(60.0, ctx.node_timeout))

    def verify(self, ctx: Context) -> list[Check]:
        p = ctx.plan
        checks = []
        for kind, obj, patch in self.inspect(ctx)["workloads"]:
            md = obj["metadata"]
            name = f"{kind} {md['namespace']}/{md['name']}"
            images = [c["image"] for c in obj["spec"]["template"]["spec"].get("containers", [])]
            if patch:
                checks.append(failed(name, f"still uses {', '.join(i for i in images if rewrite_image(i, p)) or p.old_pull_secret}",
                                     "apply stage Workloads"))
                continue
            if not any(i.startswith(p.registry_host + "/") for i in images):
                continue
            st = obj.get("status") or {}
            want = obj["spec"].get("replicas", 1)
            if st.get("readyReplicas", 0) < want:
                checks.append(failed(name, f"{st.get('readyReplicas', 0)}/{want} ready" +
                                     _pull_error(ctx, obj), "see the pod events (kubectl describe pod)"))
            else:
                checks.append(passed(name, {"images": images}))
        return checks or [passed("no workload uses the GHCR images", {"namespace": p.workloads_namespace})]


def _pull_error(ctx: Context, owner: dict) -> str:
    from .proxy_ingress import pull_failure_hint
    return pull_failure_hint(ctx, owner["metadata"]["namespace"], owner)


RUNNER_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list"]},
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch"]},
]


def _allowed(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(group in r.get("apiGroups", []) and (resource in r.get("resources", []) or "*" in r.get("resources", []))
               and (verb in r.get("verbs", []) or "*" in r.get("verbs", [])) for r in rules)


class CiRbac(ObjectStage):
    key, title, guide_step = "ci", "CI and RBAC", "Steps 7-8"
    description = ("The GitHub Actions runner's ServiceAccount starts Kaniko pods, reads the proxy's ClusterIP and "
                   "restarts workloads: this stage applies its Role (pods, pods/exec, pods/log, services get/list, "
                   "statefulsets and deployments get/list/watch/patch) and the RoleBinding.")

    def targets(self, ctx):
        p = ctx.plan
        return [("Role", p.runner_role, p.runner_namespace), ("RoleBinding", p.runner_role, p.runner_namespace)]

    def desired(self, ctx, live):
        p = ctx.plan
        return [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": p.runner_role, "namespace": p.runner_namespace}, "rules": RUNNER_RULES},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": p.runner_role, "namespace": p.runner_namespace},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": p.runner_role},
             "subjects": [{"kind": "ServiceAccount", "name": p.runner_service_account,
                           "namespace": p.runner_namespace}]}]

    def verify(self, ctx: Context) -> list[Check]:
        p = ctx.plan
        role = ctx.cluster.get("Role", p.runner_role, p.runner_namespace)
        if role is None:
            return [failed("runner Role", f"Role {p.runner_namespace}/{p.runner_role} missing", "apply stage CI and RBAC")]
        missing = [f"{r['resources'][0]} {v}" for r in RUNNER_RULES for v in r["verbs"]
                   if not _allowed(role.get("rules") or [], r["apiGroups"][0], r["resources"][0], v)]
        checks = [failed("runner Role", f"missing: {', '.join(missing)}", "apply stage CI and RBAC") if missing
                  else passed("runner Role", {"rules": len(role.get("rules") or [])})]
        rb = ctx.cluster.get("RoleBinding", p.runner_role, p.runner_namespace)
        bound = rb and rb.get("roleRef", {}).get("name") == p.runner_role and any(
            s.get("kind") == "ServiceAccount" and s.get("name") == p.runner_service_account
            for s in rb.get("subjects") or [])
        checks.append(passed("RoleBinding to the runner ServiceAccount") if bound else
                      failed("RoleBinding to the runner ServiceAccount",
                             f"{p.runner_namespace}/{p.runner_role} does not bind {p.runner_service_account}",
                             "apply stage CI and RBAC"))
        return checks


class Verify(Stage):
    key, title, guide_step = "verify", "Verify", "Step 9"
    description = ("The Docker v2 token flow, end to end, from three vantage points: this machine (challenge → "
                   "realm over HTTPS → token), a pod as Kaniko sees it (realm through the auth proxy, trusted via "
                   "SSL_CERT_FILE), and a real pull on EVERY node (the guide tests one).")

    def verify(self, ctx: Context) -> list[Check]:
        p = ctx.plan
        checks = []
        prober = authflow.Prober(p)
        try:
            flow = authflow.challenge_check(p, prober)
        finally:
            prober.close()
        if flow.problem:
            d = BY_KEY.get(flow.problem)
            checks.append(failed("registry challenge names the plan's realm", flow.cause,
                                 d.fix if d else "check the registry host", flow.evidence()))
        else:
            checks.append(passed("registry challenge names the plan's realm", flow.evidence()))
        if ctx.audit and not ctx.node_probes:
            checks.append(skipped("Kaniko's view: realm through the proxy", "needs a probe pod",
                                  "run audit with --node-probes"))
            checks += self._pull_events(ctx)
            return checks
        checks.append(self._kaniko(ctx))
        checks += self._pull_on_every_node(ctx)
        return checks

    def _kaniko(self, ctx: Context) -> Check:
        p = ctx.plan
        svc = ctx.cluster.get("Service", p.proxy_name, p.proxy_namespace)
        if svc is None:
            return failed("Kaniko's view: realm through the proxy", "the auth proxy service is missing",
                          "apply stage TLS auth proxy")
        ip = svc["spec"]["clusterIP"]
        url = f"https://{p.realm_hostname}/v2/token?service=container_registry"
        spec = {
            "hostAliases": [{"ip": ip, "hostnames": [p.realm_hostname]}],
            "initContainers": [{"name": "setup-certs", "image": p.helper_image, "command": [
                "sh", "-c", "cat /etc/ssl/certs/ca-certificates.crt /custom-ca/ca.crt > /certs/ca-certificates.crt"],
                "volumeMounts": [{"name": "merged-certs", "mountPath": "/certs"},
                                 {"name": "custom-ca", "mountPath": "/custom-ca"}]}],
            "containers": [{"name": "probe", "image": "curlimages/curl:8.10.1",
                            "env": [{"name": "SSL_CERT_FILE", "value": "/certs/ca-certificates.crt"}],
                            "command": ["sh", "-c", f"curl -sS -o /dev/null -w '%{{http_code}}' '{url}'"],
                            "volumeMounts": [{"name": "merged-certs", "mountPath": "/certs"}]}],
            "volumes": [{"name": "custom-ca", "configMap": {"name": p.proxy_ca_configmap}},
                        {"name": "merged-certs", "emptyDir": {}}]}
        phase, log = probe_pod(ctx, "kaniko-view", "", namespace=p.proxy_namespace, extra_spec=spec)
        code = log.strip()[-3:]
        if code == "200":
            return passed("Kaniko's view: realm through the proxy", {"request": f"GET {url} via {ip}", "status": 200})
        d = classify(log)
        return failed("Kaniko's view: realm through the proxy", f"GET {url} via the proxy ({ip}) gave "
                      f"{code if code.isdigit() else 'an error'}: {log.strip()[-160:]}",
                      d.fix if d else "check the proxy certificate and CA ConfigMap (stage TLS auth proxy)",
                      {"phase": phase, "log": log[-400:]})

    def _pull_on_every_node(self, ctx: Context) -> list[Check]:
        """The guide's pull-test pod, pinned to every node at once."""
        import secrets as _s
        p = ctx.plan
        image = p.images[0].target + ":latest"
        run = _s.token_hex(3)
        names = {}
        for n in discover_nodes(ctx):
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"ghcr2gitea-pull-test-{n.name}"[:57] + f"-{run}", "namespace":
                                p.workloads_namespace, "labels": {"ghcr2gitea.io/role": "pull-test",
                                                                  "ghcr2gitea.io/run": run}},
                   "spec": {"nodeName": n.name, "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                            "imagePullSecrets": [{"name": p.pull_secret}], "tolerations": [{"operator": "Exists"}],
                            "containers": [{"name": "pull-test", "image": image, "imagePullPolicy": "Always",
                                            "command": ["echo", "Pull succeeded"]}]}}
            ctx.cluster.create(pod, self.key)
            names[n.name] = pod["metadata"]["name"]
        results: dict[str, Check] = {}
        deadline = time.monotonic() + min(ctx.node_timeout, 60)
        try:
            while len(results) < len(names) and time.monotonic() < deadline:
                for node, name in names.items():
                    if node in results:
                        continue
                    pod = ctx.cluster.get("Pod", name, p.workloads_namespace) or {}
                    st = pod.get("status") or {}
                    for cs in st.get("containerStatuses") or []:
                        w = (cs.get("state") or {}).get("waiting") or {}
                        if w.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                            d = classify(w.get("message", ""))
                            results[node] = failed(f"{node}: pull {image}",
                                                   (d.cause if d else "the pull failed") + f" ({w.get('message', '')[-160:]})",
                                                   d.fix if d else "see kubectl describe pod",
                                                   {"message": w.get("message", "")})
                        elif cs.get("imageID") or (cs.get("state") or {}).get("terminated"):
                            results[node] = passed(f"{node}: pull {image}", {"imageID": cs.get("imageID", "")})
                    if st.get("phase") in ("Succeeded", "Running") and node not in results:
                        results[node] = passed(f"{node}: pull {image}", {"phase": st["phase"]})
                time.sleep(0.1)
        finally:
            for name in names.values():
                ctx.cluster.delete("Pod", name, p.workloads_namespace)
        for node in names:
            results.setdefault(node, failed(f"{node}: pull {image}", "no pull result in time",
                                            f"kubectl describe node {node}"))
        return [results[n] for n in names]

    def _pull_events(self, ctx: Context) -> list[Check]:
        """Without probe pods: pull failures already recorded as Events of existing pods."""
        p = ctx.plan
        bad = []
        for ev in ctx.cluster.list("Event", None, fields="reason=Failed"):
            msg = ev.get("message", "")
            if "Failed to pull image" in msg and p.registry_host in msg:
                bad.append(ev)
        if not bad:
            return [passed("no failed pulls from the registry in Events", {"registry": p.registry_host})]
        ev = max(bad, key=lambda e: e.get("lastTimestamp") or "")
        d = classify(ev.get("message", ""))
        io = ev.get("involvedObject", {})
        return [Check("no failed pulls from the registry in Events", "warn",
                      f"{io.get('namespace')}/{io.get('name')}: " + (d.cause if d else ev.get("message", "")[-160:]),
                      d.fix if d else "see kubectl describe pod", {"message": ev.get("message", "")[-400:],
                                                                   "count": len(bad)}, gating=False)]


__all__ = ["Workloads", "CiRbac", "Verify", "StageFailed"]
