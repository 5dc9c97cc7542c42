"""One run of the migration, the same for both faces: the headless ``apply`` and the wizard drive it.

A ``Run`` owns what a migration needs around the stages, once:

- the cluster lock (``lock.ClusterLock``: a Lease that fences every write of this run);
- the sweep of what an earlier run left behind (wizard pods, the node-files Secret);
- the journal, mirrored to the cluster's ConfigMap so another machine can resume it, and resume;
- the prechecks before the run's first write (ownership conflicts first, then every stage's precheck);
- the crash points of the fault suite (``faults.crash_point``) around every stage's apply;
- the progress stream: stages report through ``ctx.progress``; the Run journals per-node proofs, masks
  the text and hands each event to its subscribers (the headless printer, the wizard's screens);
- the stop token (``ctx.stop``): Pause and Abort reach the stage that is applying.

The drivers keep only what differs: the headless loop prints and exits with a code; the wizard's
``Session`` keeps per-stage state for the screens and a gate. Neither re-implements the above.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from . import plan as plan_mod
from .credentials import mask
from .faults import crash_point
from .stages import STAGES
from .stages.base import Aborted, Change, Check, Context, Paused, Progress, Stage, StopToken

__all__ = ["Aborted", "NotStarted", "Paused", "Run", "StopToken", "connect", "load_plan"]


# ---------------------------------------------------------------------- what both faces start from
def load_plan(path: str, resolve: tuple[str, ...] = ()) -> plan_mod.Plan:
    """The plan file, with ``--resolve HOST=IP`` added to ``network.resolve`` (``PlanError`` names the field)."""
    plan = plan_mod.load(path)
    if not resolve:
        return plan
    try:
        plan = dataclasses.replace(plan, resolve=tuple(plan.resolve) + tuple(resolve))
        problems = plan_mod.validate(plan)
    except ValueError as e:
        problems = [str(e)]
    if problems:
        raise plan_mod.PlanError([p.replace("network.resolve", "--resolve") for p in problems])
    return plan


def connect(plan: plan_mod.Plan, *, kubeconfig: str | None = None, context: str | None = None,
            audit: bool = False, node_probes: bool = False, **kw):
    """The connection a run uses: read-write for a migration; read-only for an audit (probe pods only when
    asked for). ``ClusterUnreachable`` when the API cannot be reached."""
    from . import cluster as cluster_mod
    cls = cluster_mod.Cluster
    if audit:
        cls = cluster_mod.ProbingReader if node_probes else cluster_mod.ClusterReader
    return cls.connect(kubeconfig, context or plan.context, **kw)


class NotStarted(Exception):
    """The prechecks stopped the run before its first write: ``found`` is [(stage, failing check)];
    ``conflicts``: they are objects the wizard does not own (every one of every later stage), else the
    first failing precheck."""

    def __init__(self, found: list[tuple[Stage, Check]], *, conflicts: bool):
        super().__init__("; ".join(f"{st.title}: {c.name}: {c.cause}" for st, c in found))
        self.found = found
        self.conflicts = conflicts


def _failing(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == "fail" and c.gating]


# ---------------------------------------------------------------------- the run
class Run:
    """The lock, sweep, journal, prechecks, crash points, progress stream and stop token of one migration."""

    def __init__(self, ctx: Context, stages: tuple[Stage, ...] = STAGES, *, journal: bool = True,
                 take_over_stale: bool = False, journal_kind: str = "migration"):
        self.ctx = ctx
        self.journal_kind = journal_kind  # wizard/journal.py KINDS: a rollback keeps its own
        self.stages = tuple(stages)
        self.stop: StopToken = ctx.stop
        self.take_over_stale = take_over_stale
        self.use_journal = journal and not ctx.audit
        self.lock = None
        self.journal = None
        self.resume_from = None  # the unfinished journal this run continues (None: a new run)
        self.prechecked = False  # the prechecks passed (adopting an object asks for them again)
        self.failed_stage: str | None = None  # the key of the stage this run stopped at (stage_failed)
        self._journal_tried = False
        self._closed = False
        self._phase: dict[str, str] = {}  # the last phase of each node the stages reported
        self._subscribers: list[Callable[[Progress], None]] = []
        self._adopted_recorded: set = set()
        ctx.progress = self._progress
        ctx.record = self.record  # the stages' undo records (wizard/rollback.py reads them)

    # ------------------------------------------------------------------ progress
    def subscribe(self, fn: Callable[[Progress], None]) -> Callable[[Progress], None]:
        """``fn`` hears every progress event, masked, in order (from the thread that applies)."""
        self._subscribers.append(fn)
        return fn

    def mask(self, text: str) -> str:
        return mask(text, *self.ctx.secrets)

    def say(self, stage: str, message: str) -> None:
        """A line of the run's own (the sweep), on the same stream as the stages'."""
        import time
        self._emit(Progress(stage, self.mask(message), time=time.time()))

    def _progress(self, p: Progress) -> None:
        self.stop.check()  # Abort: the stage unwinds from here, through its finally's
        if p.node and p.phase:
            if p.phase in ("done", "failed") and self._phase.get(p.node) != p.phase:
                self.record({"type": "node_proven" if p.phase == "done" else "node_failed", "stage": p.stage,
                             "node": p.node, "proofs": p.proofs, "elapsed": round(p.elapsed or 0, 2),
                             "message": self.mask(p.message)})
            self._phase[p.node] = p.phase
        self._emit(dataclasses.replace(p, message=self.mask(p.message)))

    def _emit(self, p: Progress) -> None:
        for fn in list(self._subscribers):
            fn(p)

    # ------------------------------------------------------------------ journal
    def record(self, event: dict) -> None:
        """One event in the journal (masked there); the journal is advice: a full disk does not stop the run."""
        if self.journal is None:
            self._open_journal()
        if self.journal is not None:
            try:
                self.journal.record(event)
            except Exception:  # noqa: BLE001 - see above; LockLost (a BaseException) still stops the run
                pass

    def _open_journal(self) -> None:
        if not self.use_journal or self.journal is not None or self._closed or self._journal_tried:
            return
        self._journal_tried = True
        from . import journal as J
        from .cluster import Cluster
        from .lock import identity
        try:
            cid = J.cluster_id(self.ctx.cluster)
            # mirrored to the cluster whenever this run may write to it: another machine can resume it
            mirror = self.ctx.cluster.sibling(patience=3) if isinstance(self.ctx.cluster, Cluster) else None
            previous = None
            if self.resume_from is None:
                try:
                    previous = J.Journal.load(cid, self.ctx.cluster, self.journal_kind)
                except Exception:  # noqa: BLE001 - see below
                    previous = None
            self.journal = J.Journal.start(cid, server=self.ctx.cluster.server,
                                           holder=self.lock.me if self.lock else identity(),
                                           secrets=self.ctx.secrets, mirror=mirror, resume=self.resume_from,
                                           previous=previous, kind=self.journal_kind)
        except Exception:  # noqa: BLE001 - without a journal there is just no resume
            self.journal = None

    def find_unfinished(self):
        """The unfinished journal of this cluster (local file or the cluster's mirror), or None."""
        if not self.use_journal:
            return None
        from . import journal as J
        try:
            previous = J.Journal.load(J.cluster_id(self.ctx.cluster), self.ctx.cluster, self.journal_kind)
        except Exception:  # noqa: BLE001 - an unreadable journal means no resume, not no run
            return None
        return previous if previous is not None and previous.unfinished() else None

    def record_adopted(self, ref, **extra) -> None:
        """The operator's explicit word to change an object the wizard does not own, kept with the run."""
        from .lock import identity
        self._adopted_recorded.add(ref)
        self.record({"type": "adopted", **ref.to_dict(), "by": self.lock.me if self.lock else identity(), **extra})

    # ------------------------------------------------------------------ lock and sweep
    def begin(self, *, resume_unfinished: bool = False) -> None:
        """Before the first write: take the lock (``LockHeld``), open the journal — continuing an unfinished
        one when ``resume_unfinished`` (the headless apply; the wizard asks first and sets ``resume_from``) —
        and sweep what an earlier run left behind. Said on the progress stream (stage "lock"). Idempotent."""
        if self.lock is not None:
            return
        from .lock import ClusterLock
        from .nodeexec import NodeExec
        from .stages.nodes import SECRET_NAME, remove_node_secret
        lock = ClusterLock(self.ctx.cluster, take_over_stale=self.take_over_stale)
        lock.acquire()
        self.lock = lock
        if resume_unfinished and self.journal is None:
            previous = self.find_unfinished()  # read under the lock: no other run writes it now
            if previous is not None:
                self.resume_from = previous
                self.say("lock", f"resuming an unfinished migration ({previous.summary()}); re-inspecting the "
                         "cluster first — where it differs from the journal, the cluster wins")
        self._open_journal()
        for ref in sorted(self.ctx.cluster.adopted - self._adopted_recorded):
            self.record_adopted(ref)
        p = self.ctx.plan
        swept = NodeExec(self.ctx.cluster, namespace=p.wizard_namespace, image=p.helper_image).sweep()
        left = list(swept.removed)
        if remove_node_secret(self.ctx.cluster, p.wizard_namespace) == "removed":  # carried the token
            left.append(f"Secret {p.wizard_namespace}/{SECRET_NAME}")
        if left:
            self.say("lock", f"removed wizard pods an earlier run left behind: {', '.join(left)}")
            self.record({"type": "swept_pods", "pods": left})
        if swept.left_alone:
            self.say("lock", f"left alone: looks like the wizard's but is not: {'; '.join(swept.left_alone)}")

    def close(self) -> None:
        """Release the lock (the journal stays: an unfinished run can be resumed)."""
        self._closed = True
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ------------------------------------------------------------------ the stage verbs
    def precheck(self, i: int, passed_over: frozenset[str] | set[str] = frozenset()) -> None:
        """Before the run's first write, for stage ``i`` and every later one: ownership conflicts first (reads
        only, every one at once), then each stage's prechecks (``NotStarted``). ``passed_over``: prechecks the
        operator overrode, as "Stage title: check name"."""
        if self.prechecked:
            return
        later = self.stages[i:]
        conflicts = [(st, c) for st in later for c in _failing(st.conflicts(self.ctx))]
        if conflicts:
            raise NotStarted(conflicts, conflicts=True)
        for st in later:
            bad = [c for c in _failing(st.precheck(self.ctx)) if f"{st.title}: {c.name}" not in passed_over]
            if bad:
                raise NotStarted([(st, bad[0])], conflicts=False)
        self.prechecked = True

    def apply_stage(self, i: int, changes: list[Change], *,
                    passed_over: frozenset[str] | set[str] = frozenset()) -> None:
        """Apply stage ``i``'s planned changes: journalled, prechecked before the run's first write, between
        the crash points. Raises what the stage raises (``StageFailed``, ``Paused``, ``Aborted``), and
        ``NotStarted``."""
        st = self.stages[i]
        self.record({"type": "stage_started", "stage": st.key, "changes": [c.target for c in changes]})
        crash_point(f"before:{st.key}")
        if changes:
            self.precheck(i, passed_over)
            if self.journal is not None:
                self.journal.activate()  # from the first write on, the journal is kept (and mirrored)
            st.apply(self.ctx, changes)
        crash_point(f"after:{st.key}")

    def stage_finished(self, st: Stage, checks: list[Check], **extra) -> None:
        self.record({"type": "stage_finished", "stage": st.key, "checks": {c.name: c.status for c in checks},
                     **extra})

    def stage_failed(self, key: str, check: Check) -> None:
        self.failed_stage = key
        self.record({"type": "stage_failed", "stage": key, "check": check.name, "cause": self.mask(check.cause),
                     "fix": check.fix})

    def stage_paused(self, st: Stage, left: list[str]) -> None:
        self.record({"type": "stage_paused", "stage": st.key, "left": list(left)})

    def finish(self) -> None:
        if self.journal is not None:
            try:
                self.journal.finish()
            except Exception:  # noqa: BLE001 - see record()
                pass
