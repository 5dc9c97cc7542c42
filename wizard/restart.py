"""The rolling restart of K3s, node by node, each restart PROVEN — never a fixed sleep.

Shaped like kured's loop, as a sequence of named guards: order (servers, then agents) →
quorum guard (every other server Ready and /readyz ok) → snapshot → restart through an
nsenter pod (``systemctl --no-block restart UNIT``) → proof:

1. the unit's start timestamp changed (systemd's ``ActiveEnterTimestampMonotonic``, read on the node);
2. the kubelet renewed its Lease after the new process started (a heartbeat from the new kubelet);
3. the kubelet posted a ``Starting`` event for the node after the new process started;
4. the node is Ready;
5. containerd's regenerated config has a hosts.toml for every plan host (registries.yaml
   was loaded — the only proof that matters for the migration).

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

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from . import registries as R
from .faults import crash_point
from .kube import NodeInfo
from .nodeexec import NodeExec
from .script import Script

PROOFS = ("restart started", "unit restarted", "heartbeat", "kubelet Starting event", "Ready", "containerd config")


@dataclass
class NodeRun:
    node: str
    role: str
    unit: str
    reason: str = ""
    phase: str = "queued"
    started: float = 0.0
    ended: float = 0.0
    proofs: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(PROOFS, False))
    error: str = ""

    @property
    def elapsed(self) -> float:
        return (self.ended or time.time()) - self.started if self.started else 0.0

    def summary(self) -> str:
        got = [k for k, v in self.proofs.items() if v]
        missing = [k for k, v in self.proofs.items() if not v]
        head = self.error or f"{self.node} did not come back within the node timeout"
        return f"{head}; proven: {', '.join(got) or 'nothing'}; not proven: {', '.join(missing) or 'nothing'}"

    def next_step(self) -> str:
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


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    text = text.replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def written_after(text: str | None, bound: float) -> bool:
    """The API timestamp ``text`` is not before ``bound`` (epoch seconds). A whole-second stamp (an
    Event's ``lastTimestamp``) is truncated, so it is compared with the bound's second."""
    ts = _ts(text)
    if ts is None:
        return False
    whole = "." not in (text or "").partition("T")[2]
    return ts >= (math.floor(bound) if whole else bound)


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
    def __init__(self, ctx, *, poll: float = 0.05):
        from .stages.preflight import discover_nodes
        self.ctx = ctx
        self.cluster = _rollout_connection(ctx.cluster)
        self.plan = ctx.plan
        self.nodes = discover_nodes(ctx)
        self.exec = NodeExec(self.cluster, namespace=ctx.plan.wizard_namespace, image=ctx.plan.helper_image)
        self.poll = poll
        self.runs: dict[str, NodeRun] = {}
        self.stop = ctx.stop  # Pause: finish the current node(s), then stop; Abort: at the next progress event

    @property
    def stop_requested(self) -> bool:
        return self.stop.stopping

    # ------------------------------------------------------------------ reporting
    def _emit(self, run: NodeRun, message: str) -> None:
        self.ctx.say("restart", message, node=run.node, phase=run.phase, proofs=dict(run.proofs),
                     elapsed=run.elapsed)

    def dry_run(self, names: list[str]) -> list[str]:
        facts = self.ctx.cache.get("node_facts", {})
        lines = ["order (servers one at a time, then agents "
                 f"{'one at a time' if self.ctx.max_unavailable <= 1 else f'{self.ctx.max_unavailable} at a time'}):"]
        for i, n in enumerate(ordered(self.nodes, names), 1):
            f = facts.get(n.name)
            unit = (f.unit if f else None) or ("k3s" if n.role == "server" else "k3s-agent")
            reason = f.restart_reason(self.plan) if f else "needs restart"
            lines.append(f"  {i}. {n.name} ({n.role}, systemctl restart {unit}): {reason}")
        skipped = [n.name for n in self.nodes if n.name not in set(names)]
        if skipped:
            lines.append(f"  skipped (already loaded): {', '.join(skipped)}")
        lines += ["guards: before each server, every other server Ready and /readyz ok (etcd quorum);",
                  f"        each node proven (unit start changed, heartbeat, Starting event, Ready, containerd "
                  f"config) within {self.ctx.node_timeout:.0f} s, else the rollout stops there"]
        return lines

    # ------------------------------------------------------------------ the loop
    def run(self, names: list[str]) -> RolloutReport:
        facts = self.ctx.cache.get("node_facts") or {}
        order = ordered(self.nodes, names)
        for n in order:
            f = facts.get(n.name)
            unit = (f.unit if f and f.unit else None) or ("k3s" if n.role == "server" else "k3s-agent")
            self.runs[n.name] = NodeRun(n.name, n.role, unit, reason=(f.restart_reason(self.plan) if f else "") or "")
            self._emit(self.runs[n.name], f"{n.name}: queued ({self.runs[n.name].reason})")
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

    def _quorum_guard(self, run: NodeRun, deadline: float) -> bool:
        """Never take a server down while another server is not Ready or the API is not ready."""
        while True:
            others = [n for n in self.cluster.list("Node") if n["metadata"]["name"] != run.node
                      and "node-role.kubernetes.io/control-plane" in (n["metadata"].get("labels") or {})]
            down = [n["metadata"]["name"] for n in others if NodeInfo.from_node(n).ready != "True"]
            if not down and self.cluster.readyz():
                return True
            if time.time() > deadline:
                run.error = (f"quorum guard: {', '.join(down) or 'the API'} not ready, so {run.node} was not "
                             "restarted")
                return False
            self._emit(run, f"{run.node}: waiting: {', '.join(down) or '/readyz'} not ready (quorum guard)")
            time.sleep(0.2)

    def _restart_one(self, n: NodeInfo, *, is_server: bool) -> bool:
        run = self.runs[n.name]
        deadline = time.time() + self.ctx.node_timeout
        if is_server and not self._quorum_guard(run, deadline):
            run.phase = "failed"
            self._emit(run, f"{n.name}: {run.error}")
            return False
        before = self.ctx.cache.get("node_facts", {}).get(n.name)
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

    def _prove(self, run: NodeRun, before_mono: int | None, deadline: float) -> bool:
        facts = None
        while time.time() < deadline:
            # A probe pod runs only once the kubelet is back: its result is the node's own word.
            res = self.exec.run_many({run.node: R.facts_script(self.plan)}, stage="restart", purpose="proof",
                                     timeout=max(1.0, deadline - time.time()))[run.node]
            if res.ok:
                f = R.parse_facts(run.node, res.output, self.plan)
                if f.active and f.active_enter_mono is not None and f.active_enter_mono != before_mono:
                    facts = f
                    break
                self._emit(run, f"{run.node}: unit not restarted yet")
            elif res.exit_code is not None:
                self._emit(run, f"{run.node}: probe failed (exit {res.exit_code})")
            time.sleep(self.poll)
        if facts is None:
            return False
        run.proofs["unit restarted"] = True
        if facts.started_after is None:
            run.error = (f"{run.node} restarted but the probe could not tell when k3s started (systemctl show "
                         f"{run.unit} -p InactiveExitTimestampMonotonic, cat /proc/uptime, date +%s.%N on the node)")
            return False
        started = facts.started_after  # the new process's start, at its earliest: the new kubelet wrote after it
        self._emit(run, f"{run.node}: unit restarted")
        while True:
            node = self.cluster.get("Node", run.node) or {}
            run.proofs["Ready"] = NodeInfo.from_node(node).ready == "True" if node else False
            lease = self.cluster.get("Lease", run.node, "kube-node-lease") or {}
            run.proofs["heartbeat"] = written_after((lease.get("spec") or {}).get("renewTime"), started)
            events = self.cluster.list("Event", None, fields=f"involvedObject.name={run.node},reason=Starting")
            run.proofs["kubelet Starting event"] = any(
                written_after(e.get("lastTimestamp") or e.get("eventTime"), started) for e in events)
            run.proofs["containerd config"] = facts.hosts_loaded
            if all(run.proofs.values()):
                return True
            if not facts.hosts_loaded:
                missing = [h for h, t in facts.loaded_hosts.items() if not t]
                run.error = (f"{run.node} restarted but containerd has no config for {', '.join(missing)}: "
                             "registries.yaml was not loaded")
                return False
            if time.time() > deadline:
                return False
            self._emit(run, f"{run.node}: waiting for " + ", ".join(k for k, v in run.proofs.items() if not v))
            time.sleep(self.poll)
