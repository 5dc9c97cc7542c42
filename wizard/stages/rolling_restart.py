"""Stage Rolling restart [Step 5]: the proven rolling restart of k3s (wizard/restart.py) as a stage."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .. import registries as R
from ..diagnose import BY_KEY
from ..restart import RollingRestart
from .base import Change, Check, Context, Observation, Paused, Stage, StageFailed, failed, passed, skipped
from .nodes import node_facts, unrestartable
from .preflight import discover_nodes


def _broken_check(facts: dict[str, R.NodeFacts]) -> Check | None:
    """A failing check for the first node whose k3s generated a config containerd ignores, or None."""
    node, f = next(((n, f) for n, f in facts.items() if f.broken), (None, None))
    if f is None:
        return None
    d = BY_KEY["k3s-hosts-toml-no-host-table"]
    return failed(f"{node}: registries.yaml loaded", f.broken_summary(), d.fix,
                  {"diagnosis": d.key, "k3s_version": f.k3s_version, "hosts": sorted(f.broken)})


@dataclass(frozen=True)
class RestartSeen(Observation):
    """Each node's k3s unit and registries.yaml facts, and the nodes in restart order (servers first)."""

    facts: dict[str, R.NodeFacts]
    nodes: list


class RollingRestartStage(Stage):
    key, title, guide_step = "restart", "Rolling restart", "Step 5"
    view = "rollout"
    node_probes = True
    description = ("K3s reads registries.yaml only at start. Servers (unit k3s) restart one at a time, never while "
                   "another server is down or the API is not ready, then agents (k3s-agent). Each restart is PROVEN: "
                   "the unit's start time changed, the kubelet posted a fresh heartbeat and a 'Starting kubelet' "
                   "event, the node is Ready, and containerd's regenerated config names the registry hosts. The first "
                   "node that does not come back stops the rollout.")

    undo_restart = False  # the rollback's restart: containerd must drop the plan hosts (wizard/rollback.py)
    loaded_name = "registries.yaml loaded"  # what each node's check says is proven

    def reason(self, ctx: Context, f: R.NodeFacts) -> str | None:
        return f.unload_reason(ctx.plan) if self.undo_restart else f.restart_reason(ctx.plan)

    def inspect(self, ctx: Context) -> RestartSeen:
        facts = node_facts(ctx)
        return RestartSeen(facts, discover_nodes(ctx))

    def plan(self, ctx: Context, observed: RestartSeen) -> list[Change]:
        broken = None if self.undo_restart else _broken_check(observed.facts)
        if broken is not None:  # restarting more nodes of that release breaks their pulls too
            raise StageFailed(broken)
        if (no_systemd := unrestartable(observed.facts)) is not None:
            raise StageFailed(no_systemd)
        changes = []
        for n in observed.nodes:
            f = observed.facts.get(n.name)
            reason = self.reason(ctx, f) if f else None
            if reason:
                changes.append(Change(f"node {n.name}: systemctl restart {f.unit or 'k3s'}", "restart", reason,
                                      n.name))
        return changes

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        if not changes:
            return
        try:
            report = RollingRestart(ctx, undo=self.undo_restart).run([c.payload for c in changes])
        finally:
            ctx.cache.node_facts = None
        if not report.ok:
            f = report.failed
            raise StageFailed(failed(f"{f.node} came back", f.summary(), f.next_step(),
                                     {"proofs": f.proofs, "elapsed": round(f.elapsed, 1),
                                      **({"diagnosis": f.diagnosis} if f.diagnosis else {})}))
        left = [r.node for r in report.runs if r.phase == "skipped"]
        ctx.stop.check()  # an abort, not a pause, stopped it
        if left:  # ctx.stop asked for a pause: the nodes restarted so far are proven, these are not touched
            raise Paused(left)

    def dry_run(self, ctx: Context, changes: list[Change]) -> list[str]:
        return RollingRestart(ctx, undo=self.undo_restart).dry_run([c.payload for c in changes]) if changes else []

    def verify(self, ctx: Context) -> list[Check]:
        if ctx.audit and not ctx.node_probes:
            return [skipped("every node loaded registries.yaml", "reading containerd's config needs probe pods",
                            "run audit with --node-probes")]
        facts = node_facts(ctx, fresh=not ctx.audit)
        checks = []
        for node, f in facts.items():
            reason = self.reason(ctx, f)
            if f.broken and not self.undo_restart:
                checks.append(_broken_check({node: f}))
            elif reason:
                d = BY_KEY["not-restarted"]
                checks.append(failed(f"{node}: {self.loaded_name}", reason, d.fix))
            else:
                checks.append(passed(f"{node}: {self.loaded_name}",
                                     {"unit": f.unit, "since": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                             time.gmtime(f.active_enter or 0))}))
        return checks
