"""The run's journal: what happened, so the next run can say where the last one stopped.

Stages started and finished, decisions and overrides, per-node restart proofs, with times.
It lives in the user's XDG state directory, written atomically (temp + fsync + rename), and is
mirrored to a ConfigMap in the cluster so a run started on one machine can be resumed from
another. It never holds a secret: every text is masked before it is recorded.

The journal is advice, not truth: resume re-inspects the cluster, and where they disagree the
cluster wins (and the difference is shown).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .credentials import Secret, mask
from .fsutil import write_atomic

CONFIGMAP = "ghcr2gitea-journal"
CONFIGMAP_NAMESPACE = "kube-system"
VERSION = 1
# each kind of run keeps its own journal: a rollback's never replaces the migration's, whose undo records it reads
KINDS = {"migration": ("", CONFIGMAP), "rollback": (".rollback", "ghcr2gitea-rollback-journal")}
UNDO = "undo"  # an event that says how to take one change back (wizard/rollback.py reads them)
ROLLED_BACK = "rolled_back"  # the undo records before it were taken back


def journal_path(cid: str, kind: str = "migration") -> Path:
    return state_dir() / f"{cid}{KINDS[kind][0]}.json"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ghcr2gitea"


def cluster_id(cluster) -> str:
    """A stable name for the cluster: kube-system's UID (the server URL is only a fallback)."""
    ns = cluster.get("Namespace", "kube-system")
    basis = (ns or {}).get("metadata", {}).get("uid") or cluster.server
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


@dataclass
class Journal:
    cluster_id: str
    server: str = ""
    started: float = field(default_factory=time.time)
    holder: str = ""
    finished: float | None = None
    events: list[dict] = field(default_factory=list)
    path: Path | None = None
    secrets: tuple = ()
    mirror: object = None  # a Cluster to mirror into, or None
    kind: str = "migration"  # which run's journal (KINDS): its file and ConfigMap
    persist: bool = True  # False until the run first changes something: a run that stops before writes nothing

    # ---------------------------------------------------------------- reading
    @classmethod
    def load(cls, cid: str, cluster=None, kind: str = "migration") -> Journal | None:
        """The newest journal for this cluster: the local file or the cluster's ConfigMap."""
        local = None
        path = journal_path(cid, kind)
        name = KINDS[kind][1]
        try:
            local = cls._from_dict(json.loads(path.read_text()), path, kind)
        except (OSError, ValueError, KeyError):
            pass
        remote = None
        if cluster is not None:
            try:
                cm = cluster.get("ConfigMap", name, CONFIGMAP_NAMESPACE)
                if cm and (cm.get("data") or {}).get("journal.json"):
                    remote = cls._from_dict(json.loads(cm["data"]["journal.json"]), path, kind)
            except (ValueError, KeyError, OSError):
                remote = None
            except Exception:  # noqa: BLE001 - an unreachable mirror must not stop a run
                remote = None
        found = [j for j in (local, remote) if j is not None and j.cluster_id == cid]
        return max(found, key=lambda j: j.updated) if found else None

    @classmethod
    def _from_dict(cls, d: dict, path: Path, kind: str = "migration") -> Journal:
        return cls(cluster_id=d["cluster_id"], server=d.get("server", ""), started=d["started"],
                   holder=d.get("holder", ""), finished=d.get("finished"), events=list(d.get("events") or []),
                   path=path, kind=kind)

    @property
    def updated(self) -> float:
        return max([self.started] + [e.get("time", 0) for e in self.events])

    def unfinished(self) -> bool:
        return self.finished is None

    @property
    def done(self) -> list[str]:
        """Stages the journal saw finish (in order)."""
        out = []
        for e in self.events:
            if e.get("type") == "stage_finished" and e.get("stage") not in out:
                out.append(e["stage"])
        return out

    @property
    def stage(self) -> str | None:
        """The stage the run was in when it stopped."""
        for e in reversed(self.events):
            if e.get("type") in ("stage_started", "stage_failed"):
                return e.get("stage")
        return None

    @property
    def undo(self) -> list[dict]:
        """The undo records not yet taken back (those after the last rollback), oldest first."""
        out: list[dict] = []
        for e in self.events:
            if e.get("type") == ROLLED_BACK:
                out = []
            elif e.get("type") == UNDO:
                out.append(e)
        return out

    @property
    def nodes_proven(self) -> list[str]:
        return [e["node"] for e in self.events if e.get("type") == "node_proven"]

    def summary(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        parts = [f"started {when}" + (f" by {self.holder}" if self.holder else "")]
        if self.done:
            parts.append(f"done: {', '.join(self.done)}")
        if self.stage and self.stage not in self.done:
            parts.append(f"stopped in: {self.stage}")
        if self.nodes_proven:
            parts.append(f"nodes restarted and proven: {', '.join(self.nodes_proven)}")
        return "; ".join(parts)

    # ---------------------------------------------------------------- writing
    @classmethod
    def start(cls, cid: str, *, server: str, holder: str, secrets: tuple[Secret | None, ...] = (),
              mirror=None, resume: Journal | None = None, previous: Journal | None = None,
              kind: str = "migration") -> Journal:
        """A new run's journal (or ``resume``'s, continued). ``previous``: the cluster's last journal of this kind,
        whose undo records not yet taken back are carried over — a second ``apply`` that changes nothing must
        not lose the way back the first one recorded."""
        if resume is not None and resume.unfinished():
            j = resume
            j.secrets, j.mirror, j.holder, j.persist = secrets, mirror, holder, True
            j.record({"type": "run_resumed"})
            return j
        j = cls(cluster_id=cid, server=server, holder=holder, path=journal_path(cid, kind), secrets=secrets,
                mirror=mirror, kind=kind, persist=False)
        carried = previous.undo if previous is not None and previous.cluster_id == cid else []
        j.events.extend(dict(e, carried=True) for e in carried)
        j.record({"type": "run_started"})
        if carried:
            j.persist = True  # the records must survive this run even if it changes nothing
            j.save()
        return j

    def activate(self) -> None:
        """The run is about to change the cluster: from now on the journal is kept, on disk and in the cluster."""
        if not self.persist:
            self.persist = True
            self.save()

    def record(self, event: dict) -> None:
        clean = {k: (mask(v, *self.secrets) if isinstance(v, str) else v) for k, v in event.items()}
        clean.setdefault("time", time.time())
        self.events.append(clean)
        self.save()

    def finish(self) -> None:
        self.finished = time.time()
        self.record({"type": "run_finished"})

    def to_dict(self) -> dict:
        return {"version": VERSION, "cluster_id": self.cluster_id, "server": self.server, "started": self.started,
                "holder": self.holder, "finished": self.finished, "events": self.events}

    def save(self) -> None:
        if not self.persist:
            return
        text = mask(json.dumps(self.to_dict(), indent=1, default=str), *self.secrets)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, text.encode(), mode=0o600)
        if self.mirror is not None:
            try:
                self.mirror.apply({"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": KINDS[self.kind][1], "namespace": CONFIGMAP_NAMESPACE},
                                   "data": {"journal.json": text}}, "journal")
            except Exception:  # noqa: BLE001 - the local file is the journal; the mirror is best effort
                pass
