"""The rolling restart's guards and proofs, as named objects — the shape of kured's checkers and blockers.

A **guard** is asked before a node is restarted: may it go down now? A **proof** is asked after: did this
restart of k3s happen and load registries.yaml? Each is a small class with a ``name`` and one method,
``check(subject) -> (ok, why)``, testable alone; ``why`` is one line a person reads (what is missing, or
what was seen). The rollout (wizard/restart.py) runs ``GUARDS`` and ``PROOFS`` in order; the rollout
view, the journal and the report name them by ``name``. Adding a proof is one class here, in ``PROOFS``.

"After the new process started" is the subject's ``started``: systemd's ``InactiveExitTimestamp`` (else
``ExecMainStartTimestamp``) in the node's epoch seconds — k3s starts its kubelet before it signals READY,
so the new kubelet's Lease and ``Starting`` event are older than ``ActiveEnterTimestamp``. The old kubelet
is gone before the new process starts, so nothing it wrote passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from .kube import NodeInfo

CONTROL_PLANE = "node-role.kubernetes.io/control-plane"


# ---------------------------------------------------------------------- what they look at
@dataclass(frozen=True)
class Candidate:
    """The node a guard is asked about."""

    node: str
    role: str  # server | agent


@dataclass(frozen=True)
class Restarted:
    """What a proof is asked about: one node's restart, and what its probe pod read after it."""

    node: str
    unit: str
    before_mono: int | None  # the unit's ActiveEnterTimestampMonotonic before the restart
    facts: object = None  # registries.NodeFacts read by a probe pod after the restart (None: not yet)

    @property
    def started(self) -> float | None:
        """When the new k3s process started, epoch seconds (None: the probe could not tell)."""
        return getattr(self.facts, "started_after", None)


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
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


# ---------------------------------------------------------------------- guards
class Guard:
    name = ""
    wait = True  # False: a refusal that waiting cannot change (the rollout stops at once)

    def check(self, subject: Candidate) -> tuple[bool, str]:
        raise NotImplementedError


class NodeExists(Guard):
    """The node is still in the cluster (deleted since the plan was made: nothing to restart)."""

    name, wait = "node exists", False

    def __init__(self, cluster):
        self.cluster = cluster

    def check(self, subject: Candidate) -> tuple[bool, str]:
        if self.cluster.get("Node", subject.node) is None:
            return False, f"node {subject.node} is no longer in the cluster"
        return True, f"node {subject.node} is in the cluster"


class Quorum(Guard):
    """Never take a server down while another server is not Ready or the API is not ready (etcd quorum)."""

    name = "quorum"

    def __init__(self, cluster):
        self.cluster = cluster

    def check(self, subject: Candidate) -> tuple[bool, str]:
        if subject.role != "server":
            return True, "an agent: no quorum to keep"
        others = [n for n in self.cluster.list("Node") if n["metadata"]["name"] != subject.node
                  and CONTROL_PLANE in (n["metadata"].get("labels") or {})]
        down = [n["metadata"]["name"] for n in others if NodeInfo.from_node(n).ready != "True"]
        if down:
            return False, f"{', '.join(down)} not ready"
        if not self.cluster.readyz():
            return False, "the API not ready"
        return True, f"{len(others)} other server(s) Ready and /readyz ok"


# ---------------------------------------------------------------------- proofs
class Proof:
    name = ""
    short = ""  # the rollout view's column tick
    final = False  # True: read once from the probe; a failure is not waited out (the rollout stops)

    def check(self, subject: Restarted) -> tuple[bool, str]:
        raise NotImplementedError


class UnitRestarted(Proof):
    """systemd says the unit is active and entered that state at another moment than before the restart."""

    name, short = "unit restarted", "unit"

    def check(self, subject: Restarted) -> tuple[bool, str]:
        f = subject.facts
        if f is None:
            return False, "no probe of the node answered yet"
        if not f.active:
            return False, f"{subject.unit} is not active"
        if f.active_enter_mono is None:
            return False, f"{subject.unit} gave no start timestamp"
        if f.active_enter_mono == subject.before_mono:
            return False, f"{subject.unit} has the start timestamp it had before the restart"
        return True, f"{subject.unit} active since a new start ({f.active_enter_mono} µs after boot)"


class _ClusterProof(Proof):
    def __init__(self, cluster):
        self.cluster = cluster


class Heartbeat(_ClusterProof):
    """The kubelet renewed its Lease after the new process started: the new kubelet is alive."""

    name, short = "heartbeat", "beat"

    def check(self, subject: Restarted) -> tuple[bool, str]:
        if subject.started is None:
            return False, "the node's start time is unknown"
        lease = self.cluster.get("Lease", subject.node, "kube-node-lease") or {}
        renewed = (lease.get("spec") or {}).get("renewTime")
        if written_after(renewed, subject.started):
            return True, f"Lease kube-node-lease/{subject.node} renewed at {renewed}"
        return False, f"Lease kube-node-lease/{subject.node} last renewed {renewed or 'never'}, before the restart"


class StartingEvent(_ClusterProof):
    """The kubelet posted a ``Starting`` event for the node after the new process started."""

    name, short = "kubelet Starting event", "event"

    def check(self, subject: Restarted) -> tuple[bool, str]:
        if subject.started is None:
            return False, "the node's start time is unknown"
        events = self.cluster.list("Event", None, fields=f"involvedObject.name={subject.node},reason=Starting")
        fresh = [e for e in events if written_after(e.get("lastTimestamp") or e.get("eventTime"), subject.started)]
        if fresh:
            return True, f"Starting event at {fresh[-1].get('lastTimestamp') or fresh[-1].get('eventTime')}"
        return False, f"no Starting event for {subject.node} since the restart ({len(events)} older)"


class Ready(_ClusterProof):
    """The node's Ready condition is True."""

    name, short = "Ready", "Ready"

    def check(self, subject: Restarted) -> tuple[bool, str]:
        node = self.cluster.get("Node", subject.node)
        if not node:
            return False, f"node {subject.node} is not in the cluster"
        ready = NodeInfo.from_node(node).ready
        return ready == "True", f"Ready={ready}"


class ContainerdConfig(Proof):
    """containerd's regenerated config holds, for every plan host, what registries.yaml asks — read where THIS
    node's k3s release writes it (its kubeletVersion: config.toml before Feb 2024, else certs.d/<host>/hosts.toml
    plus the auth in config.toml's CRI section) and checked by content: the host's TLS mode, a [host] table
    (the broken releases write none, and containerd ignores the file), the auth entry. The only proof that
    matters for the migration."""

    name, short, final = "containerd config", "ctrd", True

    def check(self, subject: Restarted) -> tuple[bool, str]:
        f = subject.facts
        if f is None:
            return False, "no probe of the node answered yet"
        if f.generated:
            release = f" (k3s {f.k3s_version})" if f.k3s_version else ""
            if f.hosts_loaded:
                return True, "; ".join(why for _, why in f.generated.values()) + release
            if f.broken:
                return False, f.broken_summary()
            return False, "; ".join(f.not_loaded.values()) + release
        missing = [h for h, loaded in f.loaded_hosts.items() if not loaded]
        if f.hosts_loaded:
            return True, f"hosts.toml for {', '.join(sorted(f.loaded_hosts)) or 'every plan host'}"
        return False, f"containerd has no config for {', '.join(missing) or 'the plan hosts'}"


class ContainerdUnloaded(Proof):
    """The rollback's last proof: containerd's regenerated config no longer holds any plan host that the
    node's registries.yaml does not name (k3s regenerates certs.d and config.toml from the file at start). It
    takes ContainerdConfig's place, under the same name: the rollout view, journal and report read alike."""

    name, short, final = ContainerdConfig.name, ContainerdConfig.short, True

    def check(self, subject: Restarted) -> tuple[bool, str]:
        f = subject.facts
        if f is None:
            return False, "no probe of the node answered yet"
        still = f.still_loaded()
        if still:
            return False, f"containerd still has config for {', '.join(still)}"
        return True, "containerd has no config the node's registries.yaml does not name"


GUARDS: tuple[type[Guard], ...] = (NodeExists, Quorum)
PROOFS: tuple[type[Proof], ...] = (UnitRestarted, Heartbeat, StartingEvent, Ready, ContainerdConfig)
UNDO_PROOFS: tuple[type[Proof], ...] = (UnitRestarted, Heartbeat, StartingEvent, Ready, ContainerdUnloaded)


def guards(cluster) -> list[Guard]:
    return [g(cluster) for g in GUARDS]


def proofs(cluster, *, undo: bool = False) -> list[Proof]:
    """The proofs of one node's restart; ``undo``: a rollback's, where containerd must drop the plan hosts."""
    return [p(cluster) if issubclass(p, _ClusterProof) else p() for p in (UNDO_PROOFS if undo else PROOFS)]
