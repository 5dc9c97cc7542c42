"""The rolling restart of K3s, node by node, each restart PROVEN — never a fixed sleep.

Shaped like kured's loop, composed of named objects (wizard/proofs.py): order (servers, then
agents) → the guards (``node exists``; ``quorum``: every other server Ready and /readyz ok) →
snapshot → restart through an nsenter pod (``systemctl --no-block restart UNIT``) → the proofs:

1. ``unit restarted``: the unit's start timestamp changed (systemd's ``ActiveEnterTimestampMonotonic``);
2. ``heartbeat``: the kubelet renewed its Lease after the new process started;
3. ``kubelet Starting event``: the kubelet posted a ``Starting`` event after the new process started;
4. ``Ready``: the node is Ready;
5. ``containerd config``: containerd's regenerated config holds what registries.yaml asks for every plan
   host, read where the node's k3s release (its kubeletVersion) writes it and checked by content
   (wizard/k3sversions.py; the only proof that matters for the migration). On the k3s releases whose
   hosts.toml containerd ignores, the rollout stops at that node with diagnosis
   ``k3s-hosts-toml-no-host-table``, and a re-run refuses to restart another node of that release.

"After the new process started" is systemd's ``InactiveExitTimestamp`` (else ``ExecMainStartTimestamp``),
not ``ActiveEnterTimestamp``: k3s starts its kubelet BEFORE it signals READY (a server waits for etcd
and the API server, tens of seconds), so the new kubelet's Lease and ``Starting`` event are older than
READY. The stamps are read as systemd's monotonic µs and turned into epoch seconds with the node's own
clock pair (never its local time, which older systemd prints), and compared with what the kubelet wrote
from the same clock. The old kubelet is gone before the new process starts, so nothing it wrote passes.

Only then the next node. The first node that is not proven within ``node_timeout`` stops
the rollout; nothing after it is touched.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import proofs as P
from . import registries as R
from .faults import crash_point
from .kube import NodeInfo
from .nodeexec import NodeExec
from .proofs import written_after  # noqa: F401 - where the stamps are compared; kept importable here
from .script import Script

BROKEN_HOSTS_TOML = "k3s-hosts-toml-no-host-table"  # wizard/diagnose.py
# the rollout view's, the journal's and the report's names, in order: the restart pod started, then each proof
PROOFS = ("restart started", *(p.name for p in P.PROOFS))


@dataclass
class NodeRun:
    node: str
    role: str
    unit: str
    reason: str = ""
    phase: str = "queued"  # queued | held (a guard waits: quorum, …) | restarting | waiting | done | failed | skipped
    started: float = 0.0
    ended: float = 0.0
    proofs: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(PROOFS, False))
    error: str = ""
    diagnosis: str = ""  # a wizard/diagnose.py key when the failure has a known cause and fix

    @property
    def elapsed(self) -> float:
        return (self.ended or time.time()) - self.started if self.started else 0.0

    def summary(self) -> str:
        got = [k for k, v in self.proofs.items() if v]
        missing = [k for k, v in self.proofs.items() if not v]
        head = self.error or f"{self.node} did not come back within the node timeout"
        return f"{head}; proven: {', '.join(got) or 'nothing'}; not proven: {', '.join(missing) or 'nothing'}"

    def next_step(self) -> str:
        if self.diagnosis:
            from .diagnose import BY_KEY
            return BY_KEY[self.diagnosis].fix
        return (f"look at the node: `systemctl status {self.unit}` and `journalctl -u {self.unit} -n 100` on "
                f"{self.node} (or kubectl describe node {self.node}); once it is back, run the same command again — "
                "finished nodes are not restarted twice")


@dataclass
class RolloutReport:
    runs: list[NodeRun]

    @property
    def failed(self) -> NodeRun | None:
        return next((r for r in self.runs if r.phase == "failed"), None)

    @property
    def ok(self) -> bool:
        return self.failed is None


def ordered(nodes: list[NodeInfo], names: list[str]) -> list[NodeInfo]:
    """Servers first (one at a time), then agents; each group in name order."""
    want = set(names)
    chosen = [n for n in nodes if n.name in want]
    return sorted(chosen, key=lambda n: (n.role != "server", n.name))


def restart_script(unit: str) -> str:
    """The node command that restarts K3s without waiting for it (the kubelet goes away with it)."""
    return Script().add("systemctl --no-block restart {unit}", unit=unit).text()


def _rollout_connection(cluster):
    """The rollout's own connection (same API client, same lock fence): it retries often — a restarting API
    server comes back within seconds — and says why the API is away, without changing the run's shared
    connection while other threads (the journal, the lock's renewer) use it."""
    if not hasattr(cluster, "sibling"):
        return cluster
    own = cluster.sibling(patience=cluster.patience, request_timeout=cluster.request_timeout,
                          on_retry=lambda m: cluster.on_retry(m))
    own.adopted = cluster.adopted
    own.max_delay = 0.2
    return own


class RollingRestart:
    def __init__(self, ctx, *, poll: float = 0.05, undo: bool = False):
        from .stages.preflight import discover_nodes
        self.ctx = ctx
        self.cluster = _rollout_connection(ctx.cluster)
        self.plan = ctx.plan
        self.nodes = discover_nodes(ctx)
        self.exec = NodeExec(self.cluster, namespace=ctx.plan.wizard_namespace, image=ctx.plan.helper_image)
        self.poll = poll
        self.runs: dict[str, NodeRun] = {}
        self.stop = ctx.stop  # Pause: finish the current node(s), then stop; Abort: at the next progress event
        self.guards = P.guards(self.cluster)
        self.proofs = P.proofs(self.cluster, undo=undo)
        self.undo = undo  # a rollback's restart: containerd must DROP the plan hosts
        # the containerd-config proof compares the loaded password with the token (salted, on the node)
        self.token_check = R.TokenCheck.of(ctx.token) if ctx.token is not None and not undo else None

    def reason(self, f) -> str | None:
        return f.unload_reason(self.plan) if self.undo else f.restart_reason(self.plan)

    @property
    def stop_requested(self) -> bool:
        return self.stop.stopping

    # ------------------------------------------------------------------ reporting
    def _emit(self, run: NodeRun, message: str) -> None:
        self.ctx.say("restart", message, node=run.node, phase=run.phase, proofs=dict(run.proofs),
                     elapsed=run.elapsed)

    def dry_run(self, names: list[str]) -> list[str]:
        facts = self.ctx.cache.node_facts or {}
        lines = ["order (servers one at a time, then agents "
                 f"{'one at a time' if self.ctx.max_unavailable <= 1 else f'{self.ctx.max_unavailable} at a time'}):"]
        for i, n in enumerate(ordered(self.nodes, names), 1):
            f = facts.get(n.name)
            unit = (f.unit if f else None) or ("k3s" if n.role == "server" else "k3s-agent")
            reason = self.reason(f) if f else "needs restart"
            lines.append(f"  {i}. {n.name} ({n.role}, systemctl restart {unit}): {reason}")
        skipped = [n.name for n in self.nodes if n.name not in set(names)]
        if skipped:
            lines.append(f"  skipped (already loaded): {', '.join(skipped)}")
        lines += [f"guards: {', '.join(g.name for g in self.guards)} — before each server, every other server Ready "
                  "and /readyz ok (etcd quorum);",
                  f"proofs: {', '.join(p.name for p in self.proofs)} — each node proven within "
                  f"{self.ctx.node_timeout:.0f} s, else the rollout stops there"]
        return lines

    # ------------------------------------------------------------------ the loop
    def run(self, names: list[str]) -> RolloutReport:
        facts = self.ctx.cache.node_facts or {}
        order = ordered(self.nodes, names)
        for n in order:
            f = facts.get(n.name)
            unit = (f.unit if f and f.unit else None) or ("k3s" if n.role == "server" else "k3s-agent")
            self.runs[n.name] = NodeRun(n.name, n.role, unit, reason=(self.reason(f) if f else "") or "")
            # the reason has its own parentheses ("… (k3s has not loaded them)"): after a colon, not inside more
            reason = self.runs[n.name].reason
            self._emit(self.runs[n.name], f"{n.name}: queued" + (f": {reason}" if reason else ""))
        servers = [n for n in order if n.role == "server"]
        agents = [n for n in order if n.role != "server"]
        for n in servers:
            if not self._restart_one(n, is_server=True) or self.stop_requested:
                return self._finish(order)
        batch = max(1, self.ctx.max_unavailable)
        for i in range(0, len(agents), batch):
            group = agents[i:i + batch]
            with ThreadPoolExecutor(max_workers=len(group)) as pool:
                results = list(pool.map(lambda n: self._restart_one(n, is_server=False), group))
            if not all(results) or self.stop_requested:
                return self._finish(order)
        return self._finish(order)

    def _finish(self, order: list[NodeInfo]) -> RolloutReport:
        for n in order:
            run = self.runs[n.name]
            if run.phase == "queued":
                run.phase = "skipped"
                self._emit(run, f"{n.name}: not touched (the rollout stopped before it)")
        return RolloutReport([self.runs[n.name] for n in order])

    def _guarded(self, run: NodeRun, deadline: float) -> bool | None:
        """Every guard lets the node go down now; a guard that says no is waited out (unless waiting cannot
        change its answer) until the node's deadline. None: Pause or Abort came while a guard held the node."""
        subject = P.Candidate(run.node, run.role)
        held = ""
        while True:
            refusal = next(((g, why) for g in self.guards for ok, why in [g.check(subject)] if not ok), None)
            if refusal is None:
                return True
            g, why = refusal
            if not g.wait or time.time() > deadline:
                run.error = f"{g.name} guard: {why}, so {run.node} was not restarted"
                return False
            if self.stop_requested:  # nothing of this node was touched: it stays queued (Paused lists it)
                run.phase = "queued"
                return None
            if why != held:  # said once per reason (the view shows it the whole time)
                run.phase, held = "held", why
                self._emit(run, f"{run.node}: waiting: {why} ({g.name} guard)")
            time.sleep(0.2)

    def _restart_one(self, n: NodeInfo, *, is_server: bool) -> bool:
        run = self.runs[n.name]
        deadline = time.time() + self.ctx.node_timeout
        allowed = self._guarded(run, deadline)
        if allowed is None:
            return True  # stopped before it: the rollout stops here (stop_requested)
        if not allowed:
            run.phase = "failed"
            self._emit(run, f"{n.name}: {run.error}")
            return False
        before = (self.ctx.cache.node_facts or {}).get(n.name)
        before_mono = before.active_enter_mono if before else None
        run.phase, run.started = "restarting", time.time()
        if is_server:  # the kubeconfig may point at this server: its API goes away with k3s
            self.cluster.retry_note = f" (expected while {n.name}'s k3s restarts)"
        self._emit(run, f"{n.name}: systemctl restart {run.unit}")
        pod = self.exec.start(n.name, restart_script(run.unit), stage="restart", purpose="restart")
        crash_point(f"restart:{n.name}")
        try:
            run.proofs["restart started"] = True
            run.phase = "waiting"
            ok = self._prove(run, before_mono, deadline)
        finally:
            self.exec.cleanup(names=[pod])
        run.ended = time.time()
        self.cluster.retry_note = ""
        if ok:
            run.phase = "done"
            self._emit(run, f"{n.name}: restarted and proven in {run.elapsed:.1f} s")
        else:
            run.phase = "failed"
            self._emit(run, f"{n.name}: {run.summary()}")
        return ok

    def _kubelet(self, node: str) -> str:
        """The Node's kubeletVersion now (after the restart it is the release that generated the config)."""
        live = self.cluster.get("Node", node)
        return NodeInfo.from_node(live).kubelet if live else next((n.kubelet for n in self.nodes if n.name == node), "")

    def _prove(self, run: NodeRun, before_mono: int | None, deadline: float) -> bool:
        unit = self.proofs[0]  # unit restarted: read by a probe pod, which runs only once the kubelet is back
        subject = P.Restarted(run.node, run.unit, before_mono)
        while time.time() < deadline:
            res = self.exec.run_many({run.node: R.facts_script(self.plan, self.token_check)}, stage="restart", purpose="proof",
                                     timeout=max(1.0, deadline - time.time()))[run.node]
            if res.ok:
                subject = P.Restarted(run.node, run.unit, before_mono,
                                      R.parse_facts(run.node, res.output, self.plan, self._kubelet(run.node)))
                if unit.check(subject)[0]:
                    break
                self._emit(run, f"{run.node}: unit not restarted yet")
            elif res.exit_code is not None:
                self._emit(run, f"{run.node}: probe failed (exit {res.exit_code})")
            time.sleep(self.poll)
        else:
            return False
        run.proofs[unit.name] = True
        if subject.started is None:
            run.error = (f"{run.node} restarted but the probe could not tell when k3s started (systemctl show "
                         f"{run.unit} -p InactiveExitTimestampMonotonic, cat /proc/uptime, date +%s.%N on the node)")
            return False
        self._emit(run, f"{run.node}: unit restarted")
        rest = self.proofs[1:]
        while True:
            verdicts = {p.name: p.check(subject) for p in rest}
            run.proofs.update({name: ok for name, (ok, _) in verdicts.items()})
            if all(run.proofs.values()):
                return True
            final = next((p for p in rest if p.final and not verdicts[p.name][0]), None)
            if final is not None:  # read once from the probe: waiting does not change it
                broken = subject.facts.broken if subject.facts is not None else {}
                run.error = (f"{run.node} restarted but {verdicts[final.name][1]}" if broken else
                             f"{run.node} restarted but {verdicts[final.name][1]}: registries.yaml was not loaded")
                run.diagnosis = BROKEN_HOSTS_TOML if broken else ""
                return False
            if time.time() > deadline:
                return False
            self._emit(run, f"{run.node}: waiting for " + ", ".join(k for k, v in run.proofs.items() if not v))
            time.sleep(self.poll)
