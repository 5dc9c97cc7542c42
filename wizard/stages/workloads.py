"""Stage Workloads [Step 6]: the plan's images in live workloads and manifest files move to Gitea, with rollout waits."""

from __future__ import annotations

from dataclasses import dataclass

from .. import manifests as M
from ..plan import Plan
from .base import WARN, Change, Check, Context, Observation, Stage, StageFailed, failed, object_diff, passed
from .images import list_served, pod_spec
from .pods import pull_failure_hint, wait_rollout

# the kinds patched: their pod template is what future pods are made from (a CronJob's: its job template's)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")
# the kinds whose running pods cannot be changed (a Job's pod template is immutable, a bare Pod's image too):
# reported, never patched — they keep pulling from GHCR until they are replaced
IMMUTABLE_KINDS = ("Job", "Pod")


def rewrite_image(image: str, plan: Plan, pins: M.Pins | None = None) -> str | None:
    """The Gitea reference for a plan image (``M.migrated_ref``: tag or digest kept, or pinned), else None."""
    return M.migrated_ref(image, plan, pins)


def pod_spec_patch(spec: dict, plan: Plan, pins: M.Pins | None = None) -> dict:
    """Strategic-merge patch of a pod spec: containers by name, imagePullSecrets replaced."""
    patch: dict = {}
    for key in ("initContainers", "containers"):
        changed = [{"name": c["name"], "image": new} for c in spec.get(key) or []
                   if (new := rewrite_image(c.get("image", ""), plan, pins))]
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


@dataclass(frozen=True)
class WorkloadsSeen(Observation):
    """The workloads in the plan's namespace, each as (kind, object, pod-spec patch; {} = nothing to move), and the
    rewrite of the plan's manifest files."""

    workloads: list[tuple[str, dict, dict]]
    manifests: M.Scan
    pins: M.Pins | None = None  # workloads.pin_digests: (image, tag) → the digest Gitea holds and the pods run
    immutable: tuple[str, ...] = ()  # "Job ns/name runs IMAGE": what cannot be patched and keeps GHCR

    def items(self):
        """What the screen shows: the workloads and manifest files, then pinning and what stays on GHCR in words."""
        out = [("workloads", self.workloads), ("manifests", self.manifests)]
        if self.pins is not None:
            out.append(("digest_pinning", f"on — {len(self.pins)} image reference(s) resolved to a digest"))
        if self.immutable:
            out.append(("left_on_GHCR_until_replaced", "; ".join(self.immutable)))
        return out


class Workloads(Stage):
    key, title, guide_step = "workloads", "Workloads", "Step 6"
    description = ("Points the live workloads at the Gitea registry: every container image from the plan's GHCR "
                   "images (tags and digests kept) and the imagePullSecrets entry, patched on the container by name, "
                   "then waits for each rollout and explains a failed pull. The plan's manifest files get the same "
                   "edits in place — only those strings change; comments and formatting stay byte for byte.")

    def inspect(self, ctx: Context) -> WorkloadsSeen:
        p = ctx.plan
        objects = [(kind, obj) for kind in WORKLOAD_KINDS for obj in list_served(ctx.cluster, kind, p.workloads_namespace)]
        pins = digest_pins(ctx, objects) if p.pin_digests else None
        found = [(kind, obj, pod_spec_patch(pod_spec(kind, obj), p, pins)) for kind, obj in objects]
        return WorkloadsSeen(found, manifest_scan(p, pins), pins, immutable_users(ctx))

    def precheck(self, ctx: Context) -> list[Check]:
        """Every manifest file of the plan must parse before anything is written anywhere."""
        scan = manifest_scan(ctx.plan)
        return [_unparsable(scan)] if scan.errors else []

    def plan(self, ctx: Context, observed: WorkloadsSeen) -> list[Change]:
        changes = []
        scan = observed.manifests
        if scan.errors:
            raise StageFailed(_unparsable(scan))
        for rw in scan.changed:
            changes.append(Change(f"file {rw.path}", "write", rw.diff(), rw))
        for kind, obj, patch in observed.workloads:
            if not patch:
                continue
            md = obj["metadata"]
            target = f"{kind} {md['namespace']}/{md['name']}"
            spec = pod_spec(kind, obj)
            before = {k: [{"name": c["name"], "image": c["image"]} for c in spec.get(k) or []]
                      for k in ("initContainers", "containers") if spec.get(k)}
            before["imagePullSecrets"] = spec.get("imagePullSecrets", [])
            after = {k: [{"name": c["name"], "image": rewrite_image(c["image"], ctx.plan, observed.pins) or c["image"]}
                         for c in spec.get(k) or []] for k in ("initContainers", "containers") if spec.get(k)}
            after["imagePullSecrets"] = pull_secrets_after(spec, patch, ctx.plan)
            changes.append(Change(target, "update", object_diff(before, after, target),
                                  (kind, md["name"], md["namespace"], patch)))
        return changes

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        files = [ch for ch in changes if isinstance(ch.payload, M.Rewrite)]
        changes = [ch for ch in changes if not isinstance(ch.payload, M.Rewrite)]
        self._gate(ctx, changes)
        for line in immutable_users(ctx):
            ctx.say(self.key, f"warning: {line}")
        for ch in files:
            ctx.say(self.key, f"write {ch.target}")
            ctx.undo("manifest", **manifest_undo(ch.payload))
            try:
                ch.payload.write()
            except (M.ManifestError, OSError) as e:
                raise StageFailed(failed("manifest file written", str(e), "check the file and run again "
                                         "(files already written are not rewritten twice)")) from None
        for ch in changes:
            kind, name, ns, patch = ch.payload
            ctx.say(self.key, f"patch {ch.target}")
            live = ctx.cluster.get(kind, name, ns)
            if live is not None:  # the images and pull secrets as they are now: the way back (ghcr2gitea rollback)
                ctx.undo("workload", kind=kind, namespace=ns, name=name, before=template_refs(pod_spec(kind, live)))
            # the operator's workload, named by the plan's images: a strategic patch of the containers' images
            # and imagePullSecrets only (by name), never a server-side-apply takeover of its other fields
            body = {"template": {"spec": patch}}
            if kind == "CronJob":  # the job template: the Jobs it starts from now on pull from Gitea
                body = {"jobTemplate": {"spec": body}}
            ctx.cluster.patch(kind, name, ns, {"spec": body}, named_by_plan=True)
        for ch in changes:
            kind, name, ns, _ = ch.payload
            if kind in ("Deployment", "StatefulSet"):
                wait_rollout(ctx, kind, name, ns, self.key, timeout=max(60.0, ctx.node_timeout))

    def _gate(self, ctx: Context, changes: list[Change]) -> None:
        """Nothing is patched unless every image the patched workloads will run is in Gitea with the digest
        their pods run now (stage Images copies them)."""
        from .images import missing_in_gitea
        refs = set()
        for ch in changes:
            patch = ch.payload[3]
            for key in ("initContainers", "containers"):
                for c in patch.get(key) or []:
                    hit = M.split_ref(c["image"], ctx.plan)
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
        observed = self.inspect(ctx)
        for kind, obj, patch in observed.workloads:
            md = obj["metadata"]
            name = f"{kind} {md['namespace']}/{md['name']}"
            tmpl = pod_spec(kind, obj)
            images = [c["image"] for c in (tmpl.get("initContainers") or []) + (tmpl.get("containers") or [])]
            if patch:
                pins = observed.pins
                checks.append(failed(name, f"still uses {', '.join(i for i in images if rewrite_image(i, p, pins)) or p.old_pull_secret}",
                                     "apply stage Workloads"))
                continue
            if not any(i.startswith(p.registry_host + "/") for i in images):
                continue
            if kind == "CronJob":  # no pods to count: its next Job pulls from Gitea
                checks.append(passed(name, {"images": images}))
                continue
            ready, want = _readiness(kind, obj)
            if ready < want:
                checks.append(failed(name, f"{ready}/{want} ready" + _pull_error(ctx, obj),
                                     "see the pod events (kubectl describe pod)"))
            else:
                checks.append(passed(name, {"images": images}))
        if observed.immutable:
            checks.append(Check("running Jobs and Pods that cannot be patched", WARN,
                                f"{len(observed.immutable)} keep pulling from GHCR until they are replaced: "
                                + "; ".join(observed.immutable[:3]) + (" …" if len(observed.immutable) > 3 else ""),
                                "let them finish, or delete and recreate them from the migrated manifests (a "
                                "CronJob's next Job pulls from Gitea)", {"objects": list(observed.immutable)},
                                gating=False))
        checks += manifest_checks(ctx.plan, observed.pins)
        return checks or [passed("no workload uses the GHCR images", {"namespace": p.workloads_namespace})]


def template_refs(spec: dict) -> dict:
    """What the Workloads stage changes in a pod template: each container's image (by name) and the pull
    secrets, as they are (the rollback puts exactly these back)."""
    out = {k: [{"name": c.get("name"), "image": c.get("image")} for c in spec.get(k) or []]
           for k in ("initContainers", "containers")}
    out["imagePullSecrets"] = [{"name": s.get("name")} for s in spec.get("imagePullSecrets") or []]
    return out


def manifest_undo(rw: M.Rewrite) -> dict:
    """How to take a file's rewrite back: each edit's text and where it sits in the rewritten file."""
    import hashlib
    edits, shift = [], 0
    for e in sorted(rw.edits, key=lambda e: e.start):
        edits.append({"at": e.start + shift, "old": e.old, "new": e.new, "line": e.line})
        shift += len(e.new) - len(e.old)
    return {"path": str(rw.path), "edits": edits, "sha256": hashlib.sha256(rw.after.encode()).hexdigest()}


def _readiness(kind: str, obj: dict) -> tuple[int, int]:
    """(ready, wanted) pods: DaemonSets count scheduled nodes, not replicas."""
    st = obj.get("status") or {}
    if kind == "DaemonSet":
        return st.get("numberReady", 0), st.get("desiredNumberScheduled", 0)
    return st.get("readyReplicas", 0), obj["spec"].get("replicas", 1)


def manifest_scan(plan: Plan, pins: M.Pins | None = None) -> M.Scan:
    """The rewrite of every file under the plan's workloads.manifests (read-only)."""
    return M.scan(M.plan_paths(plan), plan, pins) if plan.manifests else M.Scan()


def digest_pins(ctx: Context, objects: list[tuple[str, dict]]) -> M.Pins:
    """``workloads.pin_digests``: the digest to pin each tag the workloads and manifest files name — the one Gitea
    holds, which the pods run now (the Images stage's gate and Lookup; HEAD requests only). {} without a token."""
    from .images import Wanted, gate, pinned
    p = ctx.plan
    if ctx.token is None:
        return {}
    refs = set()
    for kind, obj in objects:
        spec = pod_spec(kind, obj)
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            hit = M.split_ref(c.get("image", ""), p)
            if hit is not None and hit[1] and not hit[2]:
                refs.add((hit[0].source, hit[1]))
    more = {}
    for rw in manifest_scan(p).rewrites:
        for image in rw.images:
            img, tag, digest = M.split_ref(image, p)
            if tag and not digest:
                more[(img.source, tag)] = Wanted(img, tag)
    found, _ = gate(ctx, refs, more)
    return {k: d for k in found.wanted if (d := pinned(found, k))}


def immutable_users(ctx: Context) -> tuple[str, ...]:
    """Running Jobs and bare Pods in the workloads namespace that name a plan image on GHCR: their pods cannot be
    changed, so they keep pulling from GHCR until they are replaced (each as "Kind ns/name runs IMAGE")."""
    p = ctx.plan
    out = []
    for kind in IMMUTABLE_KINDS:
        for obj in list_served(ctx.cluster, kind, p.workloads_namespace):
            md, st = obj.get("metadata") or {}, obj.get("status") or {}
            if kind == "Pod" and (md.get("ownerReferences") or st.get("phase") in ("Succeeded", "Failed")):
                continue  # a controller's pod (its owner is patched or reported), or finished
            if kind == "Job" and any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                                     for c in st.get("conditions") or []):
                continue
            spec = pod_spec(kind, obj)
            ghcr = [c.get("image", "") for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
                    if M.plan_image(c.get("image", ""), p) is not None]
            if ghcr:
                out.append(f"{kind} {md.get('namespace')}/{md.get('name')} runs {', '.join(ghcr)}")
    return tuple(out)


def _unparsable(scan: M.Scan) -> Check:
    return failed("manifest files parse", "; ".join(str(e) for e in scan.errors),
                  "fix those files (or take them out of workloads.manifests in the plan); nothing was written")


def manifest_checks(plan: Plan, pins: M.Pins | None = None) -> list[Check]:
    """The plan's manifest files: parse, point at Gitea, and what the rewrite leaves to the operator."""
    if not plan.manifests:
        return []
    scan = manifest_scan(plan, pins)
    checks = [_unparsable(scan)] if scan.errors else []
    pending = scan.changed
    if pending:
        where = [f"{rw.path}:{rw.edits[0].line}" for rw in pending if rw.edits]
        checks.append(failed("manifest files use the Gitea registry",
                             f"{sum(len(rw.edits) for rw in pending)} GHCR image or pull-secret reference(s) left in "
                             f"{len(pending)} file(s): {', '.join(where[:5])}{' …' if len(where) > 5 else ''}",
                             "apply stage Workloads" + ("" if pins is not None else  # rewrite does not pin
                                                         f", or: ghcr2gitea rewrite --plan {plan.source_path or 'PLAN'} "
                                                         "--write " + " ".join(map(str, M.plan_paths(plan)))),
                             {"files": [rw.path for rw in pending]}))
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
    return pull_failure_hint(ctx, owner["metadata"]["namespace"], owner)


