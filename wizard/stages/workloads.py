"""Workloads [Step 6], CI and RBAC [Steps 7–8], and Verify [Step 9]."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .. import authflow
from .. import manifests as M
from .. import workflow as W
from ..diagnose import BY_KEY, classify
from ..plan import Plan
from .base import (
    WARN,
    Change,
    Check,
    Context,
    Stage,
    StageFailed,
    failed,
    object_diff,
    passed,
    skipped,
    text_diff,
)
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
                   "then waits for each rollout and explains a failed pull. The plan's manifest files get the same "
                   "edits in place — only those strings change; comments and formatting stay byte for byte.")

    def inspect(self, ctx: Context) -> dict:
        found = []
        for kind in WORKLOAD_KINDS:
            for obj in ctx.cluster.list(kind, ctx.plan.workloads_namespace):
                patch = pod_spec_patch(obj["spec"]["template"]["spec"], ctx.plan)
                found.append((kind, obj, patch))
        return {"workloads": found, "manifests": manifest_scan(ctx.plan)}

    def precheck(self, ctx: Context) -> list[Check]:
        """Every manifest file of the plan must parse before anything is written anywhere."""
        scan = manifest_scan(ctx.plan)
        return [_unparsable(scan)] if scan.errors else []

    def plan(self, ctx: Context, observed: dict) -> list[Change]:
        changes = []
        scan = observed.get("manifests") or M.Scan()
        if scan.errors:
            raise StageFailed(_unparsable(scan))
        for rw in scan.changed:
            changes.append(Change(f"file {rw.path}", "write", rw.diff(), rw))
        for kind, obj, patch in observed["workloads"]:
            if not patch:
                continue
            md = obj["metadata"]
            target = f"{kind} {md['namespace']}/{md['name']}"
            spec = obj["spec"]["template"]["spec"]
            before = {k: [{"name": c["name"], "image": c["image"]} for c in spec.get(k) or []]
                      for k in ("initContainers", "containers") if spec.get(k)}
            before["imagePullSecrets"] = spec.get("imagePullSecrets", [])
            after = {k: [{"name": c["name"], "image": rewrite_image(c["image"], ctx.plan) or c["image"]}
                         for c in spec.get(k) or []] for k in ("initContainers", "containers") if spec.get(k)}
            after["imagePullSecrets"] = pull_secrets_after(spec, patch, ctx.plan)
            changes.append(Change(target, "update", object_diff(before, after, target),
                                  (kind, md["name"], md["namespace"], patch)))
        return changes

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        files = [ch for ch in changes if isinstance(ch.payload, M.Rewrite)]
        changes = [ch for ch in changes if not isinstance(ch.payload, M.Rewrite)]
        self._gate(ctx, changes)
        for ch in files:
            ctx.say(self.key, f"write {ch.target}")
            try:
                ch.payload.write()
            except (M.ManifestError, OSError) as e:
                raise StageFailed(failed("manifest file written", str(e), "check the file and run again "
                                         "(files already written are not rewritten twice)")) from None
        for ch in changes:
            kind, name, ns, patch = ch.payload
            ctx.say(self.key, f"patch {ch.target}")
            # the operator's workload, named by the plan's images: a strategic patch of the containers' images
            # and imagePullSecrets only (by name), never a server-side-apply takeover of its other fields
            ctx.cluster.patch(kind, name, ns, {"spec": {"template": {"spec": patch}}}, named_by_plan=True)
        for ch in changes:
            kind, name, ns, _ = ch.payload
            if kind != "DaemonSet":
                wait_rollout(ctx, kind, name, ns, self.key, timeout=max(60.0, ctx.node_timeout))

    def _gate(self, ctx: Context, changes: list[Change]) -> None:
        """Nothing is patched unless every image the patched workloads will run is in Gitea with the digest
        their pods run now (stage Images copies them)."""
        from .images import missing_in_gitea, split_ref
        refs = set()
        for ch in changes:
            patch = ch.payload[3]
            for key in ("initContainers", "containers"):
                for c in patch.get(key) or []:
                    hit = split_ref(c["image"], ctx.plan)
                    if hit is not None:
                        refs.add((hit[0].source, hit[1] or hit[2]))
        if not refs:
            return
        ctx.say(self.key, f"checking that Gitea has the {len(refs)} image(s) the workloads will run")
        missing = missing_in_gitea(ctx, refs)
        if missing:
            raise StageFailed(failed("images the workloads will run are in Gitea",
                                     "; ".join(c.cause for c in missing),
                                     "run stage Images (or `ghcr2gitea images`), or push the images through CI; "
                                     "nothing was patched", {"missing": [c.evidence for c in missing]}))

    def verify(self, ctx: Context) -> list[Check]:
        p = ctx.plan
        checks = []
        for kind, obj, patch in self.inspect(ctx)["workloads"]:
            md = obj["metadata"]
            name = f"{kind} {md['namespace']}/{md['name']}"
            tmpl = obj["spec"]["template"]["spec"]
            images = [c["image"] for c in (tmpl.get("initContainers") or []) + (tmpl.get("containers") or [])]
            if patch:
                checks.append(failed(name, f"still uses {', '.join(i for i in images if rewrite_image(i, p)) or p.old_pull_secret}",
                                     "apply stage Workloads"))
                continue
            if not any(i.startswith(p.registry_host + "/") for i in images):
                continue
            ready, want = _readiness(kind, obj)
            if ready < want:
                checks.append(failed(name, f"{ready}/{want} ready" + _pull_error(ctx, obj),
                                     "see the pod events (kubectl describe pod)"))
            else:
                checks.append(passed(name, {"images": images}))
        checks += manifest_checks(ctx.plan)
        return checks or [passed("no workload uses the GHCR images", {"namespace": p.workloads_namespace})]


def _readiness(kind: str, obj: dict) -> tuple[int, int]:
    """(ready, wanted) pods: DaemonSets count scheduled nodes, not replicas."""
    st = obj.get("status") or {}
    if kind == "DaemonSet":
        return st.get("numberReady", 0), st.get("desiredNumberScheduled", 0)
    return st.get("readyReplicas", 0), obj["spec"].get("replicas", 1)


def manifest_scan(plan: Plan) -> M.Scan:
    """The rewrite of every file under the plan's workloads.manifests (read-only)."""
    return M.scan(M.plan_paths(plan), plan) if plan.manifests else M.Scan()


def _unparsable(scan: M.Scan) -> Check:
    return failed("manifest files parse", "; ".join(str(e) for e in scan.errors),
                  "fix those files (or take them out of workloads.manifests in the plan); nothing was written")


def manifest_checks(plan: Plan) -> list[Check]:
    """The plan's manifest files: parse, point at Gitea, and what the rewrite leaves to the operator."""
    if not plan.manifests:
        return []
    scan = manifest_scan(plan)
    checks = [_unparsable(scan)] if scan.errors else []
    pending = scan.changed
    if pending:
        where = [f"{rw.path}:{rw.edits[0].line}" for rw in pending if rw.edits]
        checks.append(failed("manifest files use the Gitea registry",
                             f"{sum(len(rw.edits) for rw in pending)} GHCR image or pull-secret reference(s) left in "
                             f"{len(pending)} file(s): {', '.join(where[:5])}{' …' if len(where) > 5 else ''}",
                             f"apply stage Workloads, or: ghcr2gitea rewrite --plan {plan.source_path or 'PLAN'} "
                             "--write " + " ".join(map(str, M.plan_paths(plan))), {"files": [rw.path for rw in pending]}))
    elif scan.rewrites:
        checks.append(passed("manifest files use the Gitea registry", {"files": len(scan.rewrites)}))
    notes = [line for rw in scan.rewrites for line in rw.notes_text()]
    if notes:
        checks.append(Check("manifest references the plan does not cover", WARN,
                            f"{len(notes)} reference(s) left as they are: {notes[0]}" + (" …" if len(notes) > 1 else ""),
                            "add those images to the plan's images, or edit them by hand", {"notes": notes},
                            gating=False))
    return checks


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


# The operator confirms overwriting an existing, different workflow file by putting its path (str) in
# ctx.cache[CONFIRMED_OVERWRITES] (the wizard asks); headless runs never overwrite, they warn with the diff.
CONFIRMED_OVERWRITES = "confirmed_overwrites"


@dataclass(frozen=True)
class WorkflowFile:
    """The CI workflow as the plan wants it, and what the repository holds now (None: absent)."""

    path: Path
    text: str
    existing: str | None

    @property
    def diff(self) -> str:
        return text_diff(self.existing, self.text, str(self.path))


def workflow_file(ctx: Context) -> WorkflowFile | None:
    """The workflow for the plan's images (deploy job: the live workloads running them); None without ci.repo_dir."""
    p = ctx.plan
    path = W.workflow_path(p)
    if path is None:
        return None
    text = W.render(p, W.live_rollouts(ctx.cluster, p), W.plan_label(p, M.resolve(p, p.ci_repo_dir)))
    try:
        existing = M.read_text(path)
    except M.ManifestError:
        existing = None
    return WorkflowFile(path, text, existing)


class CiRbac(ObjectStage):
    key, title, guide_step = "ci", "CI and RBAC", "Steps 7-8"
    description = ("The GitHub Actions runner's ServiceAccount starts Kaniko pods, reads the proxy's ClusterIP and "
                   "restarts workloads: this stage applies its Role (pods, pods/exec, pods/log, services get/list, "
                   "statefulsets and deployments get/list/watch/patch) and the RoleBinding, and writes the Kaniko "
                   "build workflow into the repository named by ci.repo_dir (an existing, different file is kept "
                   "unless you confirm).")

    def inspect(self, ctx: Context) -> dict:
        observed = super().inspect(ctx)
        observed["workflow"] = workflow_file(ctx)
        return observed

    def plan(self, ctx: Context, observed: dict) -> list[Change]:
        changes = super().plan(ctx, observed)
        wf: WorkflowFile | None = observed.get("workflow")
        if wf is None or wf.existing == wf.text:
            return changes
        if wf.existing is None:
            changes.append(Change(f"file {wf.path}", "create", wf.diff, wf))
        elif str(wf.path) in ctx.cache.get(CONFIRMED_OVERWRITES, ()):
            changes.append(Change(f"file {wf.path}", "update", wf.diff, wf))
        return changes

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        super().apply(ctx, [ch for ch in changes if not isinstance(ch.payload, WorkflowFile)])
        for ch in changes:
            if isinstance(ch.payload, WorkflowFile):
                wf = ch.payload
                ctx.say(self.key, f"write {wf.path}")
                try:
                    wf.path.parent.mkdir(parents=True, exist_ok=True)
                    M.write_atomic(wf.path, wf.text.encode("utf-8"))
                except OSError as e:
                    raise StageFailed(failed("CI workflow written", f"{wf.path}: {e.strerror}",
                                             "check ci.repo_dir in the plan and the folder's permissions")) from None

    def targets(self, ctx):
        p = ctx.plan
        return [("Role", p.runner_role, p.runner_namespace), ("RoleBinding", p.runner_role, p.runner_namespace)]

    def named_by_plan(self, ctx: Context) -> set[str]:
        # The runner's Role and RoleBinding are the operator's (the guide made them); the plan names them in
        # ci.role: an existing one that is not the wizard's gets only what it lacks, never a takeover.
        p = ctx.plan
        return {f"Role {p.runner_namespace}/{p.runner_role}", f"RoleBinding {p.runner_namespace}/{p.runner_role}"}

    def additive(self, ctx: Context, have: dict, want: dict) -> list[Change]:
        from .. import ownership as O
        from .objects import PlanPatch, conflict_change
        md = have["metadata"]
        key = f"{have['kind']} {md['namespace']}/{md['name']}"
        if have["kind"] == "Role":
            rules = have.get("rules") or []
            missing = [r for r in want["rules"] if not all(
                _allowed(rules, g, res, v) for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"])]
            if not missing:
                return []
            # a merge patch of the whole list: the same result if a retry sends it twice (a JSON-patch add is not)
            return [Change(key, "update", object_diff({"rules": rules}, {"rules": rules + missing}, key),
                           PlanPatch("Role", md["name"], md["namespace"], {"rules": rules + missing}),
                           note="adds only the missing rules (the Role is not the wizard's; its rules are kept)")]
        ref, subjects = have.get("roleRef") or {}, have.get("subjects") or []
        if ref.get("kind") != "Role" or ref.get("name") != want["roleRef"]["name"]:
            # roleRef is immutable: a binding of another Role is not the runner's, and cannot be made so
            return [conflict_change(ctx, O.ref_of(have), have, rename="ci.role")]
        sa = want["subjects"][0]
        if any(s.get("kind") == "ServiceAccount" and s.get("name") == sa["name"]
               and s.get("namespace", md["namespace"]) == sa["namespace"] for s in subjects):
            return []
        return [Change(key, "update", object_diff({"subjects": subjects}, {"subjects": subjects + [sa]}, key),
                       PlanPatch("RoleBinding", md["name"], md["namespace"], {"subjects": subjects + [sa]}),
                       note="adds only the runner's ServiceAccount (the RoleBinding is not the wizard's)")]

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
        checks.append(self._workflow_check(ctx))
        checks += _namespace_checks(p)
        return checks

    def _workflow_check(self, ctx: Context) -> Check:
        name = "CI workflow file"
        wf = workflow_file(ctx)
        if wf is None:
            return skipped(name, "ci.repo_dir is not set in the plan, so no workflow file is written",
                           "set ci.repo_dir to the repository's checkout, or take the workflow from "
                           "`ghcr2gitea export`")
        if wf.existing is None:
            return failed(name, f"{wf.path} does not exist", "apply stage CI and RBAC")
        if wf.existing != wf.text:
            return Check(name, WARN, f"{wf.path} differs from the workflow the plan generates; kept as it is",
                         "review the diff, then confirm the overwrite in the wizard (or move the file away and "
                         "apply again)", {"path": str(wf.path), "diff": wf.diff}, gating=False)
        return passed(name, {"path": str(wf.path), "images": len(ctx.plan.images)})


def _namespace_checks(p: Plan) -> list[Check]:
    """Pods mount only their own namespace's Secrets and ConfigMaps; a Role grants only in its namespace."""
    out = []
    apart = {f"push secret ({p.secrets_namespace})": p.secrets_namespace,
             f"proxy CA ConfigMap ({p.proxy_namespace})": p.proxy_namespace}
    far = [what for what, ns in apart.items() if ns != p.runner_namespace]
    if far:
        out.append(Check("Kaniko pod can mount its Secret and CA", WARN,
                         f"the build pods run in {p.runner_namespace} but the {' and the '.join(far)} live elsewhere; "
                         "a pod mounts only its own namespace's Secrets and ConfigMaps",
                         "use one namespace for ci.namespace, secrets.namespace and proxy.namespace", gating=False))
    if p.workloads_namespace != p.runner_namespace or p.proxy_namespace != p.runner_namespace:
        out.append(Check("runner Role covers the deploy job", WARN,
                         f"the Role is in {p.runner_namespace}, but the workflow reads the proxy Service in "
                         f"{p.proxy_namespace} and restarts workloads in {p.workloads_namespace}",
                         "bind the same rules in those namespaces too (or keep them all in one)", gating=False))
    return out


class Verify(Stage):
    key, title, guide_step = "verify", "Verify", "Step 9"
    description = ("The Docker v2 token flow, end to end, from three vantage points at once: this machine (challenge "
                   "→ realm → token → pull, and the push secret's token may start an upload), a pod as Kaniko sees "
                   "it (/v2/ through the internal service, the realm through the auth proxy trusted via "
                   "SSL_CERT_FILE), and containerd on EVERY node (k3s crictl pull with the node's loaded config), "
                   "plus the guide's pull-test pod on every node (the guide tests one).")

    def verify(self, ctx: Context) -> list[Check]:
        from concurrent.futures import ThreadPoolExecutor
        pods = not (ctx.audit and not ctx.node_probes)  # an audit creates no pod unless --node-probes
        t0 = time.perf_counter()
        timing: dict[str, float] = {}

        def timed(name, fn, *args):
            def run():
                s = time.perf_counter()
                try:
                    return fn(*args)
                finally:
                    timing[name] = (time.perf_counter() - s) * 1000
            return run

        # every vantage point at once: the stage takes as long as its slowest check
        with ThreadPoolExecutor(max_workers=4) as pool:
            ops = pool.submit(timed("this machine", authflow.operator_flows, ctx, "challenge", "pull-secret",
                                    "push-secret"))
            kaniko = pool.submit(timed("Kaniko's view", self._kaniko, ctx)) if pods else None
            nodes = pool.submit(timed("containerd's view", self._containerd_on_every_node, ctx)) if pods else None
            pulls = pool.submit(timed("pull-test pods", self._pull_on_every_node, ctx)) if pods else None
            checks = self._operator_checks(ctx, ops.result())
            if pods:
                checks.append(kaniko.result())
                checks += nodes.result()
                checks += pulls.result()
        if not pods:
            checks.append(skipped("Kaniko's view: realm through the proxy", "needs a probe pod",
                                  "run audit with --node-probes"))
            checks.append(skipped("containerd's view on every node", "needs a privileged pod per node",
                                  "run audit with --node-probes"))
            checks += self._pull_events(ctx)
        ctx.cache["verify_timing"] = {"wall_ms": (time.perf_counter() - t0) * 1000, "parts_ms": dict(timing)}
        return checks

    def _operator_checks(self, ctx: Context, flows: dict) -> list[Check]:
        """This machine's view: the challenge, and the two secrets' tokens walked as their clients use them."""
        p = ctx.plan
        image = p.images[0].target + ":latest"
        repo = p.images[0].target_repo
        checks = []
        flow = flows["challenge"]
        if flow.problem:
            cause, fix = flow.explain()
            checks.append(failed("registry challenge names the plan's realm", cause, fix, flow.evidence()))
        else:
            checks.append(passed("registry challenge names the plan's realm", flow.evidence()))
        flow = flows["pull-secret"]
        if flow is None:
            checks.append(skipped(f"pull secret may pull {image}", f"{p.secrets_namespace}/{p.pull_secret} has no "
                                  f"credentials for {p.registry_host}", "apply stage Registry secrets"))
        elif flow.problem:
            cause, fix = flow.explain()
            checks.append(failed(f"pull secret may pull {image}", cause, fix, flow.evidence()))
        else:
            checks.append(passed(f"pull secret may pull {image}", flow.evidence()))
        flow = flows["push-secret"]
        if flow is None:
            checks.append(skipped(f"push secret may push to {repo}", f"{p.secrets_namespace}/{p.push_secret} has no "
                                  f"credentials for {p.internal_service}", "apply stage Registry secrets"))
        elif flow.problem:
            cause, fix = flow.explain()
            checks.append(failed(f"push secret may push to {repo}", cause, fix, flow.evidence()))
        else:
            checks.append(passed(f"push secret may push to {repo}", flow.evidence(),
                                 "an upload was started and cancelled with the token Kaniko would use"))
        return checks

    def _kaniko(self, ctx: Context) -> Check:
        """A pod set up like the guide's Kaniko pod: hostAliases to the proxy, the proxy CA via SSL_CERT_FILE."""
        p = ctx.plan
        t0 = time.perf_counter()
        svc = ctx.cluster.get("Service", p.proxy_name, p.proxy_namespace)
        if svc is None:
            return failed("Kaniko's view: realm through the proxy", "the auth proxy service is missing",
                          "apply stage TLS auth proxy")
        dep = ctx.cluster.get("Deployment", p.proxy_name, p.proxy_namespace) or {}
        containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
        proxy_image = containers[0].get("image", "")
        ip = svc["spec"]["clusterIP"]
        spec = {
            "hostAliases": [{"ip": ip, "hostnames": [p.realm_hostname]}],
            "initContainers": [{"name": "setup-certs", "image": p.helper_image, "command": [
                "sh", "-c", authflow.ca_bundle_script()],
                "volumeMounts": [{"name": "merged-certs", "mountPath": "/certs"},
                                 {"name": "custom-ca", "mountPath": "/custom-ca"}]}],
            "containers": [{"name": "probe", "image": "curlimages/curl:8.10.1",
                            "env": [{"name": "SSL_CERT_FILE", "value": "/certs/ca-certificates.crt"}],
                            "command": ["sh", "-c", authflow.kaniko_script(p)],
                            "volumeMounts": [{"name": "merged-certs", "mountPath": "/certs"}]}],
            "volumes": [{"name": "custom-ca", "configMap": {"name": p.proxy_ca_configmap}},
                        {"name": "merged-certs", "emptyDir": {}}]}
        phase, log = probe_pod(ctx, "kaniko-view", "", namespace=p.proxy_namespace, extra_spec=spec)
        v = authflow.judge_kaniko(log, p, proxy_image=proxy_image)
        ev = {"proxy": f"{p.proxy_namespace}/{p.proxy_name} ({ip})", "phase": phase, "log": log[-600:],
              "ms": round((time.perf_counter() - t0) * 1000, 1),
              "note": "no credentials are sent from the pod: this proves the route, the name mapping and the trust; "
                      "the push secret's token is proven by 'push secret may push'"}
        if v.realm:
            ev["realm"] = v.realm
        if v.ok:
            return passed("Kaniko's view: realm through the proxy", ev)
        d = BY_KEY.get(v.problem)
        ev["diagnosis"] = v.problem
        return failed("Kaniko's view: realm through the proxy", v.cause + (f": {d.cause}" if d else ""),
                      d.fix if d else "check the proxy certificate and CA ConfigMap (stage TLS auth proxy)", ev)

    def _containerd_on_every_node(self, ctx: Context) -> list[Check]:
        """containerd's own view: ``k3s crictl pull`` on every node, with the registries.yaml it has loaded."""
        from ..script import render
        from .nodes import node_exec
        p = ctx.plan
        image = p.images[0].target + ":latest"
        nodes = [n.name for n in discover_nodes(ctx)]
        script = authflow.pull_script(image)
        results = node_exec(ctx).run_many({n: script for n in nodes}, stage=self.key, purpose="pull",
                                          timeout=min(ctx.node_timeout, 60))
        checks = []
        for node in nodes:
            r = results[node]
            v = authflow.judge_pull(r.output, r.exit_code)
            ev = {"command": render("k3s crictl pull {image}", image=image), "exit_code": r.exit_code,
                  "output": r.output.strip()[-600:]}
            if v.ok:
                checks.append(passed(f"{node}: containerd on the node pulls {image}", ev))
                continue
            d = BY_KEY.get(v.problem)
            ev["diagnosis"] = v.problem
            checks.append(failed(f"{node}: containerd on the node pulls {image}", v.cause + (f": {d.cause}" if d else ""),
                                 d.fix if d else f"read the output; kubectl describe node {node}", ev))
        return checks

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
                            msg = w.get("message", "")
                            d = classify(msg)
                            results[node] = failed(f"{node}: pull-test pod pulls {image}",
                                                   (d.cause if d else "the pull failed") + f" ({msg[-160:]})",
                                                   d.fix if d else "see kubectl describe pod",
                                                   {"message": msg, **({"diagnosis": d.key} if d else {})})
                        elif cs.get("imageID") or (cs.get("state") or {}).get("terminated"):
                            results[node] = passed(f"{node}: pull-test pod pulls {image}", {"imageID": cs.get("imageID", "")})
                    if st.get("phase") in ("Succeeded", "Running") and node not in results:
                        results[node] = passed(f"{node}: pull-test pod pulls {image}", {"phase": st["phase"]})
                time.sleep(0.1)
        finally:
            for name in names.values():
                ctx.cluster.delete("Pod", name, p.workloads_namespace)
        for node in names:
            results.setdefault(node, failed(f"{node}: pull-test pod pulls {image}", "no pull result in time",
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
