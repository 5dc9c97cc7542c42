"""Stages that converge Kubernetes objects: desired objects vs live, applied server-side."""

from __future__ import annotations

from ..cluster import label
from .base import Change, Context, Stage, comparable, object_diff


def obj_key(obj: dict) -> str:
    md = obj["metadata"]
    return f"{obj['kind']} {md.get('namespace') + '/' if md.get('namespace') else ''}{md['name']}"


class ObjectStage(Stage):
    """inspect reads each desired object; plan diffs it; apply server-side-applies the changed ones."""

    def desired(self, ctx: Context, live: dict[str, dict | None]) -> list[dict]:
        raise NotImplementedError

    def targets(self, ctx: Context) -> list[tuple[str, str, str | None]]:
        """(kind, name, namespace) of every object this stage owns."""
        raise NotImplementedError

    def inspect(self, ctx: Context) -> dict:
        live = {}
        for kind, name, ns in self.targets(ctx):
            obj = ctx.cluster.get(kind, name, ns)
            live[f"{kind} {ns + '/' if ns else ''}{name}"] = obj
        return {"live": live}

    def plan(self, ctx: Context, observed: dict) -> list[Change]:
        live = observed["live"]
        changes = []
        for obj in self.desired(ctx, live):
            want = label(obj, self.key)
            key = obj_key(obj)
            have = live.get(key)
            if have is None:
                changes.append(Change(key, "create", object_diff(None, want, key, ctx.token), want))
            elif comparable(have, want) != want:
                changes.append(Change(key, "update", object_diff(comparable(have, want), want, key, ctx.token),
                                      want))
        return changes

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        for ch in changes:
            ctx.say(self.key, f"{ch.action} {ch.target}")
            ctx.cluster.apply(ch.payload, self.key)
