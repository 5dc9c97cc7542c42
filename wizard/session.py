"""A migration session: the stages run one at a time, for a UI that shows each step before the next.

The headless ``Runner`` runs every stage in one go; the wizard needs the same engine one verb
at a time — inspect, plan, apply, verify — with the results kept per stage, a gate (Next opens
only when every gating check passes or was overridden with a typed confirmation) and a final
report. The lock, sweep, journal, prechecks, crash points, progress stream and the stop token
(Pause, Abort) are the ``Run``'s (wizard/run.py), the same the headless apply uses. No UI here:
the screens call these methods from worker threads and render what they return.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import registries as R
from .credentials import Secret, mask
from .engine import StageResult, render_audit
from .kube import ClusterUnreachable, NodeInfo
from .lock import LockHeld, LockLost
from .run import NotStarted, Run
from .stages import STAGES, names
from .stages.base import (
    FAIL,
    PASS,
    SKIP,
    WARN,
    Aborted,
    Change,
    Check,
    Context,
    Observation,
    Paused,
    Progress,
    Stage,
    StageFailed,
)

# what the stage list shows for each stage
DONE, CURRENT, FAILED, PENDING, LOCKED = "done", "current", "failed", "pending", "locked"
OVERRIDDEN = "overridden"  # done, with a failed check passed over by the operator: never shown as ✓
PAUSED = "paused"  # the rollout stopped between nodes when asked; Apply resumes it
INTERRUPTED = 130  # a rotation aborted by the operator (the headless commands' Ctrl-C code)
ROTATION, ROLLBACK = "Token rotation", "Rollback"  # the day-two operations, as the screens name them
SKIPPED = "skipped"  # audit: every check of the stage was skipped (it needs probe pods)


class ReadOnly(Exception):
    """Apply was asked for in audit mode."""


@dataclass(frozen=True)
class Override:
    """A failed gating check the operator chose to pass over, with the words they typed."""

    stage: str
    check: str
    cause: str
    typed: str
    by: str
    at: float

    def to_dict(self) -> dict:
        return {"stage": self.stage, "check": self.check, "cause": self.cause, "typed": self.typed,
                "by": self.by, "at": self.at}


@dataclass
class StageState:
    """What the session knows about one stage."""

    stage: Stage
    found: list[str] | None = None  # what inspect found, as lines (None: not inspected yet)
    changes: list[Change] | None = None  # None: not planned yet
    checks: list[Check] | None = None  # None: not verified since the last apply
    error: Check | None = None  # plan/apply stopped with this
    applied: bool = False
    done: bool = False
    paused: bool = False
    paused_left: list[str] = field(default_factory=list)  # nodes a paused rollout has not restarted yet
    busy: str = ""  # inspecting | planning | applying | verifying
    observed: Observation | None = field(default=None, repr=False)  # inspect()'s result, for plan()

    @property
    def key(self) -> str:
        return self.stage.key

    @property
    def view(self) -> str:
        """The stage's special view ("rollout"), or ""."""
        return self.stage.view

    @property
    def title(self) -> str:
        return self.stage.title

    def failing(self) -> list[Check]:
        """Gating checks that fail (the apply error first)."""
        out = [self.error] if self.error is not None else []
        return out + [c for c in self.checks or [] if c.status == FAIL and c.gating]

    @property
    def result_status(self) -> str:
        """pass / fail / warn / skip of the last verify, or '' when not verified."""
        if self.error is not None:
            return FAIL
        if self.checks is None:
            return ""
        return StageResult(self.stage, self.checks).status


@dataclass
class ResumeOffer:
    """An unfinished run found in the journal, and what re-inspecting the cluster said about it."""

    started: float
    holder: str
    stage: str | None
    done: list[str]
    nodes_proven: list[str]
    still_done: list[str] = field(default_factory=list)  # journal's done stages that still verify
    differs: list[str] = field(default_factory=list)  # journal says done, the cluster says otherwise
    journal: Any = None

    def describe(self, titles: dict[str, str] | None = None) -> list[str]:
        def name(key: str) -> str:
            return (titles or {}).get(key, key)
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        lines = [f"started {when}" + (f" by {self.holder}" if self.holder else "")]
        if self.stage:
            lines.append(f"stopped in: {name(self.stage)}")
        lines.append(f"done: {', '.join(map(name, self.done)) or 'nothing yet'}")
        if self.nodes_proven:
            lines.append(f"nodes restarted and proven: {', '.join(self.nodes_proven)}")
        if self.differs:
            lines.append(f"the cluster differs from the journal for: {', '.join(map(name, self.differs))} — the "
                         "cluster wins; that stage is done again")
        else:
            lines.append(f"re-inspected: the {len(self.still_done)} done stage(s) still pass")
        return lines


class Session:
    """The stages of one migration (or audit), driven one verb at a time."""

    def __init__(self, ctx: Context, *, stages: tuple[Stage, ...] = STAGES,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_stage: Callable[[int], None] | None = None, journal: bool = True):
        self.ctx = ctx
        self.audit = ctx.audit
        self.states = [StageState(s) for s in stages]
        self.current = 0
        self.overrides: list[Override] = []
        self.on_progress = on_progress or (lambda p: None)
        self.on_stage = on_stage or (lambda i: None)
        self.run = Run(ctx, stages, journal=journal)
        self.stop = self.run.stop
        self.started = time.time()
        self.finished: float | None = None
        self.written: set[str] = set()  # nodes whose registries.yaml this run wrote
        self.node_phases: dict[str, Progress] = {}  # the last per-node event of the rollout
        self.last_proven = ""  # the node the rollout proved last (for "paused after …")
        self._busy = threading.RLock()  # a verb holds it across the steps it is made of (apply, then verify…)
        self._closed = False
        self.operation = ""  # a day-two operation under way (ROTATION, ROLLBACK): the screens show it busy
        self.run.subscribe(self._progress)

    @property
    def journal(self):
        return self.run.journal

    @property
    def lock(self):
        return self.run.lock

    @property
    def pausing(self) -> bool:
        """Pause was asked for and the apply under way has not stopped yet."""
        return self.stop.paused

    @classmethod
    def connect(cls, plan_path: str, *, kubeconfig: str | None = None, context: str | None = None,
                token=None, ghcr_token=None, audit: bool = False, node_probes: bool = False,
                node_timeout: float = 180.0,
                max_unavailable: int = 1, patience: float = 120.0, resolve: tuple[str, ...] = (),
                **kw) -> Session:
        """A session on the plan's cluster, as the headless commands build it (PlanError, ClusterUnreachable)."""
        from .run import connect, load_plan
        plan = load_plan(plan_path, tuple(resolve))
        cluster = connect(plan, kubeconfig=kubeconfig, context=context, audit=audit, node_probes=node_probes,
                          patience=patience)
        ctx = Context(plan=plan, cluster=cluster, token=token, ghcr_token=ghcr_token, audit=audit,
                      node_probes=audit and node_probes,
                      node_timeout=node_timeout, max_unavailable=max_unavailable)
        return cls(ctx, **kw)

    # ------------------------------------------------------------------ helpers
    def mask(self, text: str) -> str:
        return mask(text, *self.ctx.secrets)

    def problem(self, e):
        """A failure's cause and fix (wizard/problem.py: the same as the headless commands give), masked."""
        import dataclasses
        p = e.problem
        return dataclasses.replace(p, cause=self.mask(p.cause))

    @property
    def stage_count(self) -> int:
        return len(self.states)

    def index(self, key: str) -> int:
        return next(i for i, s in enumerate(self.states) if s.key == key)

    def status(self, i: int) -> str:
        """done / current / failed / pending / locked (audit: skipped), as the stage list shows it."""
        st = self.states[i]
        if self.audit:
            status = st.result_status
            gating = [c for c in st.checks or [] if c.gating]
            if status == WARN and gating and all(c.status == SKIP for c in gating):
                return SKIPPED  # only advice (e.g. node_tls: skip_verify) beside checks that could not run
            return {PASS: DONE, WARN: DONE, SKIP: SKIPPED, FAIL: FAILED}.get(status, PENDING)
        if st.done:
            return OVERRIDDEN if self.overridden(i) else DONE
        if i == self.current:
            if st.paused and not st.busy:
                return PAUSED
            return FAILED if self.blocking(i) and (st.checks is not None or st.error is not None) else CURRENT
        if i == self.current + 1:
            return PENDING
        return LOCKED

    def viewable(self, i: int) -> bool:
        """Stages the operator may look at: all in audit; done ones and the current one otherwise."""
        return self.audit or i <= self.current

    def overridden(self, i: int) -> list[Override]:
        return [o for o in self.overrides if o.stage == self.states[i].key]

    def blocking(self, i: int) -> list[Check]:
        """Failing gating checks that no override covers."""
        names = {o.check for o in self.overridden(i)}
        return [c for c in self.states[i].failing() if c.name not in names]

    def can_advance(self, i: int | None = None) -> bool:
        """Next opens when the stage was verified since its last apply and nothing blocks."""
        i = self.current if i is None else i
        st = self.states[i]
        if self.audit or st.busy or i != self.current or st.done:
            return False
        if st.checks is None and st.error is None:
            return False
        if st.changes and not st.applied:
            return False  # an override passes over a failed check, never over changes not applied
        return not self.blocking(i)

    def next_reason(self, i: int | None = None) -> str:
        """Why Next is closed, in one line ('' when open)."""
        i = self.current if i is None else i
        st = self.states[i]
        if self.audit:
            return "audit mode: read-only"
        if st.done:
            return "done"
        if st.busy:
            return f"{st.busy}…"
        if st.paused:
            return self.paused_line(i)
        if st.error is not None and st.error in self.blocking(i):
            return f"failed: {st.error.name} (fix it, then Apply again — or override)"
        if st.changes and not st.applied:
            if self.overridden(i):  # an override passes over the check, never over the changes
                return f"{len(st.changes)} change(s) to apply first: an override skips a check, not changes"
            return f"{len(st.changes)} change(s) to apply first"
        if st.checks is None and st.error is None:
            return "not checked yet"
        blocking = self.blocking(i)
        if blocking:
            return f"{len(blocking)} gating check(s) fail: {blocking[0].name}"
        return ""

    def paused_line(self, i: int | None = None) -> str:
        """'paused after dellmini3; 2 nodes left — Apply resumes' for a paused rollout ('' otherwise)."""
        st = self.states[self.current if i is None else i]
        if not st.paused:
            return ""
        left = len(st.paused_left) if st.paused_left else len(st.changes or [])
        after = f"paused after {self.last_proven}" if self.last_proven else "paused"
        return f"{after}; {left} node{'s' if left != 1 else ''} left — Apply resumes"

    def registries_states(self) -> dict[str, str]:
        """Per node: absent / written / needs restart / restarting / loaded (nodes not read yet are left out)."""
        facts = self.ctx.cache.node_facts or {}
        out = {n: registries_state(f, self.ctx.plan, written=n in self.written) for n, f in facts.items()}
        for node, p in list(self.node_phases.items()):
            if p.phase in ("restarting", "waiting"):
                out[node] = "restarting"
            elif p.phase == "done":
                out[node] = "loaded"
            elif p.phase == "failed":
                out[node] = "needs restart"  # written; this k3s never proved it loaded the file
        return out

    # ------------------------------------------------------------------ progress
    def _progress(self, p: Progress) -> None:
        """The Run's progress stream (masked, journalled there): what the screens need per node."""
        if p.node and p.phase:
            self.node_phases[p.node] = p
            if p.phase == "done":
                self.last_proven = p.node
        if p.node and p.wrote == R.PATH:
            self.written.add(p.node)
        self.on_progress(p)

    def record(self, event: dict) -> None:
        self.run.record(event)

    def _changed(self, i: int) -> None:
        self.on_stage(i)

    # ------------------------------------------------------------------ the verbs
    def _step(self, i: int, busy: str, fn):
        """Run ``fn(st)`` with the stage shown busy; a step inside another gives the outer label back when it
        ends, so a verb made of several steps (apply → verify → inspect → plan) never shows the stage idle (and
        Next open on checks about to be re-read) between them."""
        st = self.states[i]
        if self._closed:
            raise Aborted("the session is closed")
        outer = st.busy
        st.busy = busy
        self._changed(i)
        try:
            with self._busy:
                return fn(st)
        except LockLost as e:  # another run took over: nothing more is done; say so where the operator looks
            st.error = Check("cluster lock still held", FAIL, str(e), "see what the other run did (audit), then "
                             "quit and open the wizard again")
            return None
        finally:
            st.busy = outer
            self._changed(i)

    def inspect_stage(self, i: int) -> list[str]:
        """What is there now, as lines (masked); an audit never starts the probe pods some stages need."""
        def run(st: StageState):
            try:
                if self.audit and st.stage.node_probes and not self.ctx.node_probes:
                    st.found = ["node files are read through probe pods; audit is read-only (the CLI's "
                                "--node-probes allows them)"]
                    st.observed = None
                    return st.found
                observed = st.stage.inspect(self.ctx)
                st.observed = observed
                st.found = [self.mask(line) for line in describe_observed(observed, self.ctx)]
            except StageFailed as e:
                st.observed = None
                st.found = [self.mask(f"could not inspect: {e.check.cause}")]
                st.error = e.check
            except ClusterUnreachable:
                raise
            except Exception as e:  # noqa: BLE001 - shown as a value, not a traceback
                st.observed = None
                st.found = [self.mask(f"could not inspect: {type(e).__name__}: {e}")]
            return st.found
        return self._step(i, "inspecting", run)

    def plan_stage(self, i: int) -> list[Change]:
        """The changes the stage would make (diffs masked); [] when there is nothing to do."""
        def run(st: StageState):
            observed = st.observed
            if observed is None:
                st.changes = []
                return st.changes
            try:
                st.changes = st.stage.plan(self.ctx, observed)
            except StageFailed as e:
                st.changes = []
                st.error = e.check
            return st.changes
        return self._step(i, "planning", run)

    def verify_stage(self, i: int) -> list[Check]:
        """The gating checks, now."""
        def run(st: StageState):
            try:
                st.checks = st.stage.verify(self.ctx)
            except StageFailed as e:
                st.checks = [e.check]
            except ClusterUnreachable as e:
                st.checks = [Check.of("cluster reachable", self.problem(e))]
            except Exception as e:  # noqa: BLE001 - one stage that cannot be checked must not hide the others
                st.checks = [Check("stage could be checked", FAIL, self.mask(f"{type(e).__name__}: {e}"),
                                   "press Re-check; if it persists, report it with the log")]
            return st.checks
        return self._step(i, "verifying", run)

    def open_stage(self, i: int) -> None:
        """Entering a stage: inspect, plan, and verify at once when there is nothing to apply (audit: verify)."""
        st = self.states[i]
        st.error = None
        self.inspect_stage(i)
        if st.error is None:
            self.plan_stage(i)
        if self.audit or st.error is None and not st.changes:
            self.verify_stage(i)
        elif st.changes:
            st.checks = None
            self._changed(i)

    def recheck(self, i: int) -> None:
        """Re-read the cluster for this stage: inspect, plan and verify again (busy from first to last)."""
        def run(st: StageState):
            st.error = None
            self.inspect_stage(i)
            if st.error is None:
                self.plan_stage(i)
            self.verify_stage(i)
        self._step(i, "inspecting", run)

    def apply_stage(self, i: int) -> bool:
        """Apply the planned changes, then verify; True when the stage's checks pass."""
        if self.audit:
            raise ReadOnly("audit mode is read-only: nothing is applied")
        st = self.states[i]
        if i != self.current:
            raise ValueError(f"stage {st.title} is not the current stage")

        def run(st: StageState):
            st.error, st.paused, st.paused_left = None, False, []
            self.stop.clear()
            try:
                try:
                    self.run.begin()
                except LockHeld as e:
                    raise StageFailed(Check.of("cluster lock", self.problem(e))) from None
                if st.changes is None or st.observed is None:
                    st.observed = st.stage.inspect(self.ctx)
                    st.changes = st.stage.plan(self.ctx, st.observed)
                # the operator typed the stage's name for these (a failed precheck shows as this stage's error)
                passed_over = {o.check for o in self.overridden(i)}
                self.run.apply_stage(i, st.changes, passed_over=passed_over)
                st.applied = True
            except NotStarted as e:
                st.error = _not_started(e)
            except StageFailed as e:
                st.error = e.check
            except Paused as e:
                st.paused, st.paused_left = True, list(e.left)  # its own state: nothing failed
                st.applied = False
                self.run.stage_paused(st.stage, e.left)
            except Aborted:
                st.error = Check("apply finished", FAIL, "aborted by the operator",
                                 "press Apply to continue: finished work is not repeated")
            except LockLost as e:
                st.error = Check("cluster lock still held", FAIL, str(e), "see what the other run did (audit), "
                                 "then quit and open the wizard again")
            except ClusterUnreachable as e:
                st.error = Check.of("cluster reachable", self.problem(e))
            except Exception as e:  # noqa: BLE001 - never a traceback on screen (it could carry a secret)
                st.error = Check("apply finished", FAIL, self.mask(f"{type(e).__name__}: {e}"),
                                 "press Apply again: it continues from where the cluster is")
            if st.error is not None:
                self.run.stage_failed(st.key, st.error)
            return st.error is None
        def settle(st: StageState):  # what follows the apply, under the same busy mark
            if st.paused:  # the nodes are fine: show what is left to restart
                st.observed = None
            else:
                self.verify_stage(i)
            self.inspect_stage(i)
            self.plan_stage(i)
        with self._busy:  # nothing else starts between the apply and its verification
            ok = self._step(i, "applying", run)
            if ok or st.paused:
                self._step(i, "inspecting" if st.paused else "verifying", settle)
            else:
                st.observed = None  # what was inspected before is stale now: the next Apply inspects and plans again
        if st.paused:
            return False
        return bool(ok) and not self.blocking(i)

    def pause(self) -> None:
        """Finish the unit of work under way (the node(s) restarting now), then stop: through ``ctx.stop``."""
        self.stop.pause()

    def abort(self) -> None:
        """Stop at the next progress event; the stage cleans up its pods on the way out."""
        self.stop.abort()

    def override(self, check: Check | str, typed_confirmation: str, i: int | None = None) -> Override:
        """Pass over a failed gating check: the operator types the stage's key (or its title) to confirm.

        It passes over the check only: the stage's changes still have to be applied before Next opens."""
        i = self.current if i is None else i
        st = self.states[i]
        name = check if isinstance(check, str) else check.name
        failing = {c.name: c for c in st.failing()}
        if name not in failing:
            raise ValueError(f"{name!r} is not a failing gating check of {st.title}")
        if not names(typed_confirmation, st.key, st.title):
            raise ValueError(f"type {st.key!r} (or {st.title!r}) to override")
        from .lock import identity
        o = Override(st.key, name, self.mask(failing[name].cause), typed_confirmation.strip(), identity(),
                     time.time())
        self.overrides.append(o)
        self.record({"type": "override", **o.to_dict()})
        self._changed(i)
        return o

    def adopt(self, kind: str, namespace: str, name: str, typed: str):
        """Let the wizard change an existing object it does not own: the operator types the object's name.
        Recorded in the journal; the object carries the wizard's label once applied."""
        from .ownership import parse_ref
        if self.audit:
            raise ReadOnly("audit mode is read-only: nothing is adopted")
        ref = parse_ref("/".join(p for p in (kind, namespace, name) if p))
        if typed.strip() != ref.name:
            raise ValueError(f"type the object's name {ref.name!r} to adopt {ref}")
        self.ctx.cluster.adopted.add(ref)
        self.run.record_adopted(ref, typed=typed.strip())
        self.run.prechecked = False
        for j, st in enumerate(self.states):
            if not st.done and st.changes and any(c.target == str(ref) for c in st.changes):
                st.changes, st.error = None, None  # planned as a conflict: plan it again as an update
                if st.observed is not None:
                    self.plan_stage(j)
                self._changed(j)
        return ref

    def advance(self) -> int:
        """Mark the current stage done and open the next; returns the new current index."""
        i = self.current
        if not self.can_advance(i):
            raise ValueError(self.next_reason(i))
        st = self.states[i]
        st.done = True
        self.run.stage_finished(st.stage, list(st.checks or []), overridden=[o.check for o in self.overridden(i)])
        if i + 1 < len(self.states):
            self.current = i + 1
        else:
            self.finish()
        self._changed(i)
        self._changed(self.current)
        return self.current

    @property
    def complete(self) -> bool:
        return all(s.done for s in self.states)

    def finish(self) -> None:
        self.finished = time.time()
        self.run.finish()

    # ------------------------------------------------------------------ audit
    def audit_all(self) -> None:
        """Audit: verify every stage (inspect where it reads only), in order."""
        for i in range(len(self.states)):
            if self.stop.aborted:
                return
            self.open_stage(i)

    # ------------------------------------------------------------------ resume
    def find_unfinished(self) -> ResumeOffer | None:
        """An unfinished run of this cluster in the journal, or None (also when there is no journal)."""
        previous = self.run.find_unfinished()
        if previous is None:
            return None
        return ResumeOffer(previous.started, getattr(previous, "holder", ""), previous.stage, list(previous.done),
                           list(getattr(previous, "nodes_proven", [])), journal=previous)

    def reinspect(self, offer: ResumeOffer) -> ResumeOffer:
        """Verify the stages the journal says are done, in order; the first that no longer passes ends the run."""
        offer.still_done, offer.differs = [], []
        for key in offer.done:
            try:
                i = self.index(key)
            except StopIteration:
                continue
            self.open_stage(i)
            if self.blocking(i) or self.states[i].changes:
                offer.differs.append(key)
                break
            offer.still_done.append(key)
        return offer

    def resume(self, offer: ResumeOffer) -> int:
        """Continue the journal's run: the re-inspected done stages are done; the next one is current."""
        self.run.resume_from = offer.journal
        n = 0
        for i, st in enumerate(self.states):
            if st.key in offer.still_done and i == n:
                st.done = True
                n += 1
        self.current = min(n, len(self.states) - 1)
        for i in range(len(self.states)):
            self._changed(i)
        return self.current

    def start_over(self) -> None:
        self.run.resume_from = None
        for st in self.states:
            st.done = False
        self.current = 0

    # ------------------------------------------------------------------ day two
    @property
    def rotating(self) -> bool:
        return self.operation == ROTATION

    def _operation(self, name: str, refused, on_progress: Callable[[Progress], None] | None):
        """Start a day-two operation: this session's busy lock (``refused`` when something is applied), its
        cluster lock handed over (the operation takes it itself, as the same holder), the stop token cleared;
        returns the progress hook that keeps the rollout's node phases (what Quit says)."""
        if self.audit:
            raise ReadOnly(f"audit mode is read-only: no {name.lower()}")
        if not self._busy.acquire(blocking=False):
            raise refused(f"something is being applied: wait for it, then start the {name.lower()}")
        if self.run.lock is not None:
            self.run.lock.release()
            self.run.lock = None
        self.operation = name
        self.stop.clear()  # Abort (and quitting) reaches the operation through this session's stop token

        def heard(p: Progress) -> None:
            if p.node and p.phase:
                self.node_phases[p.node] = p
            if on_progress is not None:
                on_progress(p)
        return heard

    def _operation_done(self) -> None:
        self.operation = ""
        self._busy.release()

    def rotate_token(self, new: Secret, *, out: Callable[[str], None],
                     on_progress: Callable[[Progress], None] | None = None):
        """``ghcr2gitea rotate-token`` from the wizard: the same function as the headless command
        (wizard/rotate.py: its stages under the cluster lock, the backups removed), with this session's cluster
        and plan. Returns its ``Rotation``; ``rotate.Refused`` when it cannot start. Both tokens are masked on
        everything this session says from the start; on success the session goes on with the new token."""
        from . import rotate as rot
        self.ctx.retired_secrets = (*self.ctx.retired_secrets, new)
        heard = self._operation(ROTATION, rot.Refused, on_progress)
        try:
            old = rot.token_in_use(self.ctx.cluster, self.ctx.plan, new, field="the new token file")
            self.ctx.retired_secrets = (*self.ctx.retired_secrets, old)
            again = "the old token is still needed: do not revoke it; rotate again to finish"
            try:
                done = rot.rotate(self.ctx.cluster, self.ctx.plan, new, old, out=lambda t: out(self.mask(t)),
                                  node_timeout=self.ctx.node_timeout, on_progress=heard, stop=self.stop)
            except Aborted:
                return rot.Rotation(INTERRUPTED, f"aborted by the operator; {again}")
            except (ClusterUnreachable, LockLost) as e:
                return rot.Rotation(2, self.mask(f"{e}; {again}"))
            except Exception as e:  # noqa: BLE001 - never a traceback on screen (it could carry a token)
                return rot.Rotation(2, self.mask(f"{type(e).__name__}: {e}; {again}"))
            if done.code == 0:
                self.ctx.token = new  # the old one may be revoked now: what follows uses the new one
            elif not done.line:
                done = rot.Rotation(done.code, f"the rotation stopped (see the log above); {again}")
            return done
        finally:
            self._operation_done()

    def rollback(self, *, out: Callable[[str], None], restore_adopted: bool = False,
                 on_progress: Callable[[Progress], None] | None = None):
        """``ghcr2gitea rollback`` from the wizard: the same function as the headless command
        (wizard/rollback.py), with this session's cluster and plan. Returns its ``Outcome``;
        ``rollback.Refused`` when it cannot start (nothing to take back, the lock held)."""
        from . import rollback as rb
        heard = self._operation(ROLLBACK, rb.Refused, on_progress)
        again = "run the rollback again to finish (it continues where the cluster is)"
        try:
            try:
                done = rb.rollback(self.ctx.cluster, self.ctx.plan, out=lambda t: out(self.mask(t)),
                                   node_timeout=self.ctx.node_timeout, restore_adopted=restore_adopted,
                                   on_progress=heard, stop=self.stop)
            except LockHeld as e:
                raise rb.Refused(str(e)) from None
            except Aborted:
                return rb.Outcome(INTERRUPTED, f"aborted by the operator; {again}")
            except (ClusterUnreachable, LockLost) as e:
                return rb.Outcome(2, self.mask(f"{e}; {again}"))
            except Exception as e:  # noqa: BLE001 - never a traceback on screen
                return rb.Outcome(2, self.mask(f"{type(e).__name__}: {e}; {again}"))
            if done.code != 0 and not done.line:
                done = rb.Outcome(done.code, f"the rollback stopped (see the log above); {again}")
            return done
        finally:
            self._operation_done()

    def close(self, wait: float = 30.0) -> None:
        """Stop what runs (Abort), wait for it to unwind, release the lock."""
        self._closed = True
        self.abort()
        if self._busy.acquire(timeout=wait):
            self._busy.release()
        self.run.close()

    # ------------------------------------------------------------------ report
    def results(self) -> list[StageResult]:
        out = []
        for st in self.states:
            checks = list(st.checks or [])
            if st.error is not None:
                checks.insert(0, st.error)
            out.append(StageResult(st.stage, checks))
        return out

    def report(self, cluster_info: dict | None = None) -> dict:
        info = dict(cluster_info or {"server": getattr(self.ctx.cluster, "server", "")})
        return {"cluster": info, "mode": "audit" if self.audit else "migration",
                "started": self.started, "finished": self.finished,
                "stages": [dict(r.to_dict(), done=st.done) for r, st in zip(self.results(), self.states, strict=True)],
                "overrides": [o.to_dict() for o in self.overrides],
                **({"images": copied} if (copied := self.ctx.cache.images_report) else {})}

    def render_report(self, fmt: str, cluster_info: dict | None = None) -> str:
        """The report as JSON or Markdown (the headless audit's format, plus overrides); secrets masked."""
        info = dict(cluster_info or {"server": getattr(self.ctx.cluster, "server", "")})
        if fmt == "json":
            return self.mask(json.dumps(self.report(info), indent=2, default=str)) + "\n"
        text = render_audit(self.results(), info, fmt, secrets=self.ctx.secrets)
        if fmt == "markdown":
            if not self.audit:
                text = text.replace("# ghcr2gitea audit", "# ghcr2gitea migration report", 1)
            lines = ["", "## Overrides", ""]
            if self.overrides:
                lines += ["| Stage | Check | Cause | Typed | By |", "|---|---|---|---|---|"]
                lines += [f"| {o.stage} | {o.check} | {o.cause} | {o.typed} | {o.by} |" for o in self.overrides]
            else:
                lines.append("None: every gating check passed.")
            lines += self.rollout_lines()
            lines += self.image_lines()
            text += "\n".join(lines) + "\n"
        return self.mask(text)

    def image_lines(self) -> list[str]:
        """The Markdown report's image copy: source → target digest per tag ([] when stage Images copied nothing)."""
        copied = self.ctx.cache.images_report
        if not copied:
            return []
        lines = ["", "## Images", "", "| Source | Target | Source digest | Target digest | Status |",
                 "|---|---|---|---|---|"]
        for img in copied.get("images", []):
            for t in img.get("tags", []):
                sep = "@" if t.get("kind") == "referrer" else ":"
                lines.append(f"| {img['source']}{sep}{t['tag']} | {img['target']}{sep}{t['tag']} | "
                             f"{t.get('source_digest', '')} | {t.get('target_digest', '')} | {t['status']} |")
        return lines

    def rollout_lines(self) -> list[str]:
        """The Markdown report's rolling restart: the guards, and each node's proofs by name ([] before it ran)."""
        if self.audit or not self.node_phases:
            return []
        from .proofs import GUARDS
        from .restart import PROOFS
        lines = ["", "## Rolling restart", "", f"Guards before each node: {', '.join(g.name for g in GUARDS)}.", "",
                 "| Node | Phase | " + " | ".join(PROOFS) + " |", "|---|---|" + "---|" * len(PROOFS)]
        for node, p in self.node_phases.items():
            got = p.proofs or {}
            lines.append(f"| {node} | {p.phase} | " + " | ".join("✓" if got.get(k) else "✗" for k in PROOFS) + " |")
        return lines


def _not_started(e: NotStarted) -> Check:
    """The prechecks' refusal as the current stage's error: the first finding, named by its stage."""
    st, c = e.found[0]
    if e.conflicts:
        same = sum(1 for other, _ in e.found if other is st)
        more = f" ({same - 1} more in this stage)" if same > 1 else ""
        return Check(f"{st.title}: {c.name}", FAIL, c.cause + more,
                     c.fix + " (here: press t to adopt it, typing its name)", c.evidence)
    return Check(f"{st.title}: {c.name}", FAIL, c.cause, c.fix, c.evidence)


# ---------------------------------------------------------------------- what inspect found, as lines
def registries_state(facts, plan, *, written: bool = False) -> str:
    """absent / written / needs restart / loaded, from a node's facts (None: not read yet → '')."""
    if facts is None:
        return ""
    if facts.unmaskable:
        return "invalid"  # not maskable on the node: the stage says why
    try:
        data = R.parse(facts.text, facts.node)
    except R.RegistriesInvalid:
        return "invalid"
    if facts.text is None or R.configured(data, plan):
        return "absent"
    if facts.restart_reason(plan) is None:
        return "loaded"
    return "written" if written else "needs restart"


def describe_observed(observed: Observation | None, ctx: Context) -> list[str]:
    """A stage's inspect() result as short lines, field by field: present/absent objects, nodes, node files,
    workloads (a field named ``<x>_name`` labels field ``<x>``)."""
    lines: list[str] = []
    for key, value in (observed.items() if observed is not None else ()):
        if key == "nodes" and isinstance(value, list):
            servers = [n.name for n in value if isinstance(n, NodeInfo) and n.role == "server"]
            agents = [n.name for n in value if isinstance(n, NodeInfo) and n.role != "server"]
            lines.append(f"nodes: {len(value)} — servers: {', '.join(servers) or 'none'}; "
                         f"agents: {', '.join(agents) or 'none'}")
        elif key == "live" and isinstance(value, dict):
            for name, obj in value.items():
                lines.append(f"{name}: {'present' if obj else 'absent'}")
        elif key == "facts" and isinstance(value, dict):
            for node, f in value.items():
                state = registries_state(f, ctx.plan)
                unit = f.unit or "no k3s unit"
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(f.active_enter)) if f.active_enter else "?"
                lines.append(f"{node}: {unit} {'active' if f.active else 'inactive'} since {since} UTC; "
                             f"registries.yaml {state}")
        elif key == "workloads" and isinstance(value, list):
            for kind, obj, patch in value:
                md = obj["metadata"]
                images = ", ".join(c.get("image", "") for c in obj["spec"]["template"]["spec"].get("containers", []))
                lines.append(f"{kind} {md['namespace']}/{md['name']}: {images}"
                             + (" — to be moved to Gitea" if patch else ""))
            if not value:
                lines.append("no workloads in the plan's namespace")
        elif key.endswith("_name"):
            continue
        elif callable(getattr(value, "summary", None)):  # a value that says itself (images.Lookup)
            lines += value.summary()
        elif key == "manifests" and hasattr(value, "rewrites"):  # a manifests.Scan: said in files, not its type
            if not value.rewrites and not value.errors:
                lines.append("manifest files: none in the plan (manifests.paths)")
            else:
                lines.append(f"manifest files: {len(value.rewrites)} read, {len(value.changed)} to rewrite"
                             + (f", {len(value.errors)} unreadable" if value.errors else ""))
        elif key == "workflow" and hasattr(value, "existing"):  # a workloads.WorkflowFile
            lines.append(f"CI workflow {value.path}: " + ("absent, to be written" if value.existing is None else
                                                          "present" + (", to be updated" if value.existing !=
                                                                       value.text else ", up to date")))
        elif key == "workflow" and value is None:
            lines.append("CI workflow: no ci.repo_dir in the plan, so none is written")
        elif isinstance(value, dict) and "metadata" in value:
            md = value["metadata"]
            label = getattr(observed, f"{key}_name", None) or f"{md.get('namespace', '')}/{md.get('name', '')}".strip("/")
            lines.append(f"{key.replace('_', ' ')}: {value.get('kind', 'object')} {label} present")
        elif value is None:
            label = getattr(observed, f"{key}_name", None)
            lines.append(f"{key.replace('_', ' ')}: {'absent' + (f' ({label})' if label else '')}")
        elif isinstance(value, (str, int, float, bool)):
            lines.append(f"{key.replace('_', ' ')}: {value}")
        elif isinstance(value, (list, tuple)):
            lines.append(f"{key.replace('_', ' ')}: {len(value)} item(s)")
        else:  # never a Python type name on the screen
            lines.append(f"{key.replace('_', ' ')}: inspected")
    return lines or ["nothing to inspect: this stage only checks"]
