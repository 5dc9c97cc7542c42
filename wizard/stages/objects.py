"""Stages that converge Kubernetes objects: desired objects vs live, applied server-side.

The ownership rule (wizard/ownership.py) is applied here, once for every such stage: a live object
the wizard does not own is planned as a ``conflict`` (never as an update), and ``conflicts()`` lets
apply stop on it before the run's first write.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import ownership as O
from ..cluster import label
from .base import Change, Check, Context, Observation, Stage, StageFailed, comparable, failed, object_diff


def obj_key(obj: dict) -> str:
    md = obj["metadata"]
    return f"{obj['kind']} {md.get('namespace') + '/' if md.get('namespace') else ''}{md['name']}"


def conflict_change(ctx: Context, ref: O.Ref, live: dict, rename: str | None = None) -> Change:
    cause, fix = O.explain(ref, live, rename or O.plan_field(ctx.plan, ref.name))
    return Change(str(ref), "conflict", "", conflict_check(ctx, ref, live, rename), note=f"{O.why(live)}; {fix}")


def conflict_check(ctx: Context, ref: O.Ref, live: dict, rename: str | None = None) -> Check:
    cause, fix = O.explain(ref, live, rename or O.plan_field(ctx.plan, ref.name))
    return failed(f"{ref} is the wizard's to change", cause, fix, {"object": ref.to_dict(),
                                                                    "managers": O.managers(live)})


@dataclass(frozen=True)
class PlanPatch:
    """A merge patch of an operator's object the plan names as in scope: only the fields it must extend,
    never a takeover (no labels, no field ownership moved)."""

    kind: str
    name: str
    namespace: str
    merge: dict


def adopted(ctx: Context):
    return getattr(ctx.cluster, "adopted", ())


@dataclass(frozen=True)
class Objects(Observation):
    """An object stage's targets as they are now, by "Kind ns/name" (None: absent)."""

    live: dict[str, dict | None]


class ObjectStage(Stage):
    """inspect reads each desired object; plan diffs it; apply server-side-applies the changed ones."""

    def desired(self, ctx: Context, live: dict[str, dict | None]) -> list[dict]:
        raise NotImplementedError

    def targets(self, ctx: Context) -> list[tuple[str, str, str | None]]:
        """(kind, name, namespace) of every object this stage owns."""
        raise NotImplementedError

    def named_by_plan(self, ctx: Context) -> set[str]:
        """Keys of targets that are the operator's objects the plan names as in scope (changed additively by the
        stage itself, never taken over): no conflict for them."""
        return set()

    def additive(self, ctx: Context, have: dict, want: dict) -> list[Change]:
        """Changes for a target in named_by_plan() that exists and is not the wizard's: only what is missing,
        as PlanPatch payloads (or a conflict when it cannot be made right without taking it over)."""
        return []

    def live(self, ctx: Context) -> dict[str, dict | None]:
        """Each target as it is now, by "Kind ns/name" (None: absent)."""
        live = {}
        for kind, name, ns in self.targets(ctx):
            obj = ctx.cluster.get(kind, name, ns)
            live[f"{kind} {ns + '/' if ns else ''}{name}"] = obj
        return live

    def inspect(self, ctx: Context) -> Objects:
        return Objects(self.live(ctx))

    def conflicts(self, ctx: Context) -> list[Check]:
        out = []
        skip = self.named_by_plan(ctx)
        for kind, name, ns in self.targets(ctx):
            ref = O.Ref(kind, ns or "", name)
            if str(ref) in skip:
                continue
            live = ctx.cluster.get(kind, name, ns)
            if O.conflict(live, ref, adopted(ctx)):
                out.append(conflict_check(ctx, ref, live))
        return out

    def plan(self, ctx: Context, observed: Objects) -> list[Change]:
        live = observed.live
        changes = []
        skip = self.named_by_plan(ctx)
        for obj in self.desired(ctx, live):
            want = label(obj, self.key)
            key = obj_key(obj)
            have = live.get(key)
            ref = O.ref_of(obj)
            if O.conflict(have, ref, adopted(ctx)):
                changes += self.additive(ctx, have, want) if key in skip else [conflict_change(ctx, ref, have)]
            elif have is None:
                changes.append(Change(key, "create", object_diff(None, want, key, *ctx.secrets), want))
            elif comparable(have, want) != want:
                note = f"adopting it: {O.why(have)}" if not O.owned(have) else ""
                changes.append(Change(key, "update", object_diff(comparable(have, want), want, key, *ctx.secrets),
                                      want, note=note))
        return changes

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        for ch in changes:
            if ch.action == "conflict":  # the precheck stops the run before this; never write past one
                raise StageFailed(ch.payload)
            ctx.say(self.key, f"{ch.action} {ch.target}")
            if isinstance(ch.payload, PlanPatch):
                p = ch.payload
                live = ctx.cluster.get(p.kind, p.name, p.namespace)
                if live is not None:
                    ctx.undo("patched", kind=p.kind, namespace=p.namespace or "", name=p.name,
                             reverse=reverse_merge(live, p.merge))
                ctx.cluster.patch(p.kind, p.name, p.namespace, p.merge, patch_type="merge", named_by_plan=True)
            else:
                self._record(ctx, ch)
                ctx.cluster.apply(ch.payload, self.key)

    def _record(self, ctx: Context, ch: Change) -> None:
        """The way back from this write (ghcr2gitea rollback), recorded before it: what the wizard creates is
        deleted; an adopted object gets its fields back (a Secret's data never enters the journal)."""
        md = ch.payload["metadata"]
        ref = dict(kind=ch.payload["kind"], namespace=md.get("namespace") or "", name=md["name"])
        if ch.action == "create":
            ctx.undo("created", **ref)
            return
        live = ctx.cluster.get(ref["kind"], ref["name"], md.get("namespace"))
        if live is not None and not O.owned(live):
            secret = ref["kind"] == "Secret"
            ctx.undo("adopted", **ref, reverse=None if secret else reverse_merge(live, ch.payload),
                     **({"why": "a Secret's data is never kept in the journal"} if secret else {}))


def reverse_merge(live: dict, merge: dict) -> dict:
    """The JSON merge patch that takes ``merge`` back on ``live``: each field it sets gets its live value again,
    and fields it adds are removed (null)."""
    out = {}
    for k, v in merge.items():
        if k not in live or live[k] is None:
            out[k] = None
        elif isinstance(v, dict) and isinstance(live[k], dict):
            out[k] = reverse_merge(live[k], v)
        else:
            out[k] = live[k]
    return out
