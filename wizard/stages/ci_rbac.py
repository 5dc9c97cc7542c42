"""Stage CI and RBAC [Steps 7-8]: the runner's Role and RoleBinding, and the Kaniko build workflow in ci.repo_dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import manifests as M
from .. import workflow as W
from ..plan import Plan
from .base import (
    WARN,
    Change,
    Check,
    Context,
    StageFailed,
    failed,
    object_diff,
    passed,
    skipped,
    text_diff,
)
from .objects import Objects, ObjectStage

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


@dataclass(frozen=True)
class CiSeen(Objects):
    """The runner's Role and RoleBinding, and the workflow file (None: the plan has no ci.repo_dir)."""

    workflow: WorkflowFile | None


class CiRbac(ObjectStage):
    key, title, guide_step = "ci", "CI and RBAC", "Steps 7-8"
    description = ("The GitHub Actions runner's ServiceAccount starts Kaniko pods, reads the proxy's ClusterIP and "
                   "restarts workloads: this stage applies its Role (pods, pods/exec, pods/log, services get/list, "
                   "statefulsets and deployments get/list/watch/patch) and the RoleBinding, and writes the Kaniko "
                   "build workflow into the repository named by ci.repo_dir (an existing, different file is kept "
                   "and never overwritten).")

    def inspect(self, ctx: Context) -> CiSeen:
        return CiSeen(self.live(ctx), workflow_file(ctx))

    def plan(self, ctx: Context, observed: CiSeen) -> list[Change]:
        changes = super().plan(ctx, observed)
        wf = observed.workflow
        if wf is None or wf.existing == wf.text:
            return changes
        if wf.existing is None:
            changes.append(Change(f"file {wf.path}", "create", wf.diff, wf))
        return changes

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        super().apply(ctx, [ch for ch in changes if not isinstance(ch.payload, WorkflowFile)])
        for ch in changes:
            if isinstance(ch.payload, WorkflowFile):
                wf = ch.payload
                ctx.say(self.key, f"write {wf.path}")
                import hashlib
                ctx.undo("file", path=str(wf.path), existed=wf.existing is not None,
                         sha256=hashlib.sha256(wf.text.encode("utf-8")).hexdigest())
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
                         "review the diff: merge it into the file by hand, or move the file away and apply "
                         "again (the wizard then writes it; it never overwrites a file it finds different)", {"path": str(wf.path), "diff": wf.diff}, gating=False)
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
