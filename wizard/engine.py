"""Running the stages headless: plan, apply and audit, with the exit codes the CLI promises.

- plan:  0 nothing to do, 3 changes pending, 2 error
- apply: 0 done, 1 a stage failed (named, with cause and fix), 2 error before any change
- audit: 0 all pass, 1 findings, 2 could not check
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .cluster import ApiError
from .credentials import mask
from .kube import ClusterUnreachable
from .ownership import NotOwned
from .run import NotStarted, Run
from .stages import STAGES
from .stages.base import FAIL, PASS, SKIP, WARN, Change, Check, Context, Progress, Stage, StageFailed

Out = Callable[[str], None]


@dataclass
class StageResult:
    stage: Stage
    checks: list[Check] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    error: str = ""

    @property
    def status(self) -> str:
        if self.error or any(c.status == FAIL for c in self.checks):
            return FAIL
        if any(c.status == WARN for c in self.checks):
            return WARN
        if self.checks and all(c.status == SKIP for c in self.checks):
            return SKIP
        return PASS

    def to_dict(self) -> dict:
        d = {"name": self.stage.title, "key": self.stage.key, "status": self.status,
             "checks": [c.to_dict() for c in self.checks]}
        if self.error:
            d["error"] = self.error
        return d


def _failing(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL and c.gating]


class Runner:
    """The headless face: a loop over a ``Run`` (wizard/run.py) that prints. Without a Run it makes one
    that keeps no journal and takes no lock (plan, audit, and tests that drive the stages directly)."""

    def __init__(self, ctx: Context, out: Out, stages: tuple[Stage, ...] = STAGES, run: Run | None = None):
        self.ctx = ctx
        self.run = run if run is not None else Run(ctx, stages, journal=False)
        self.stages = self.run.stages
        self._out = out
        self._last_phase: dict[str, str] = {}
        self.run.subscribe(self._progress)

    def record(self, event: dict) -> None:
        self.run.record(event)

    def out(self, text: str) -> None:
        self._out(mask(text, *self.ctx.secrets))

    def _progress(self, p: Progress) -> None:
        if p.node and p.phase:
            # per-node lines only when the phase changes (the UI gets every event)
            if self._last_phase.get(p.node) == p.phase and p.phase not in ("done", "failed", "held"):
                return
            self._last_phase[p.node] = p.phase
            elapsed = f" [{p.elapsed:.1f}s]" if p.elapsed else ""
            self.out(f"      {p.message}{elapsed}")
        elif p.stage == "lock":  # the run's own lines (the sweep): said as the run's, not a stage's
            self.out(p.message)
        elif p.message:
            self.out(f"      {p.message}")

    # ------------------------------------------------------------------ plan
    def plan(self) -> tuple[int, list[StageResult]]:
        results = []
        pending = 0
        for i, st in enumerate(self.stages, 1):
            r = StageResult(st)
            try:
                r.changes = st.plan(self.ctx, st.inspect(self.ctx))
            except StageFailed as e:
                r.error = f"{e.check.name}: {e.check.cause}"
            results.append(r)
            pending += len(r.changes)
            head = f"[{i}/{len(self.stages)}] {st.title}: "
            if r.error:
                self.out(head + f"cannot plan: {r.error}")
            elif not r.changes:
                self.out(head + "nothing to change")
            else:
                self.out(head + f"{len(r.changes)} change(s)")
                for ch in r.changes:
                    self.out(f"  {ch.action} {ch.target}" + (f": {ch.note}" if ch.note else ""))
                    for line in (ch.diff or "").splitlines():
                        self.out(f"    {line}")
        conflicts = sum(ch.action == "conflict" for r in results for ch in r.changes)
        if conflicts:  # pending, not "nothing to change": exit 3, and apply stops on them before any write
            self.out(f"{conflicts} conflict(s): apply stops before any write until each is renamed in the plan or "
                     "adopted with --adopt")
        return (3 if pending else 0), results

    # ------------------------------------------------------------------ apply
    def apply(self, *, dry_run: bool = False, overrides: frozenset[str] | set[str] = frozenset()) -> int:
        """Every stage in order. ``overrides``: stage keys passed over (``--override``): neither applied nor
        checked, said on the output and recorded in the journal."""
        run = self.run
        n = len(self.stages)
        done_before = set(run.journal.done) if run.journal is not None else set()  # a resumed run's
        conflicts_seen = 0
        for i, st in enumerate(self.stages, 1):
            head = f"[{i}/{n}] {st.title}"
            t0 = time.monotonic()
            if st.key in overrides:
                self.out(f"{head}: overridden (--override {st.key}): not applied, not checked")
                if not dry_run:
                    self.record({"type": "override", "stage": st.key, "check": "(the whole stage)",
                                 "by": "--override"})
                continue
            try:
                observed = st.inspect(self.ctx)
                changes = st.plan(self.ctx, observed)
                if dry_run:
                    conflicts_seen += sum(ch.action == "conflict" for ch in changes)
                    self.out(f"{head}: {len(changes)} change(s) pending" if changes else f"{head}: nothing to change")
                    for ch in changes:
                        self.out(f"  {ch.action} {ch.target}" + (f": {ch.note}" if ch.note else ""))
                    for line in st.dry_run(self.ctx, changes):
                        self.out("  " + line)
                    continue
                if changes and st.key in done_before:
                    # the cluster wins over the journal: say so, then converge
                    self.out(f"{head}: the journal says this stage was done, but the cluster differs "
                             f"({len(changes)} change(s)); redoing")
                    self.record({"type": "journal_disagrees", "stage": st.key,
                                 "changes": [c.target for c in changes]})
                if changes:
                    run.precheck(i - 1)  # before the announcement: a run that cannot start says only that
                    self.out(f"{head}: applying {len(changes)} change(s)")
                run.apply_stage(i - 1, changes)
                checks = st.verify(self.ctx)
            except NotStarted as e:
                if e.conflicts:
                    return self._conflicts(e.found)
                later, check = e.found[0]
                return self._stop(f"[{self.stages.index(later) + 1}/{n}] {later.title}", check, stage=later.key,
                                  nothing_written=True)
            except StageFailed as e:
                return self._stop(head, e.check, stage=st.key)
            except NotOwned as e:  # the write layer's refusal (a stage without a conflicts() precheck)
                return self._stop(head, Check("object is the wizard's to change", FAIL, e.cause, e.fix), stage=st.key)
            except ApiError as e:
                if e.status != 422:
                    raise
                return self._stop(head, Check("the API accepted the change", FAIL, mask(str(e), *self.ctx.secrets),
                                              f"the field cannot be changed in place: rename {e.target or 'the object'} "
                                              "in the plan, or delete it if it is the wizard's, then run again"),
                                  stage=st.key)
            failing = _failing(checks)
            if failing:
                return self._stop(head, failing[0], more=len(failing) - 1, stage=st.key)
            took = time.monotonic() - t0
            summary = ", ".join(f"{sum(c.status == s for c in checks)} {s}" for s in (PASS, WARN, SKIP)
                                if any(c.status == s for c in checks))
            run.stage_finished(st, checks, seconds=round(took, 2))
            self.out(f"{head}: ok ({summary or 'no checks'}) in {took:.1f}s")
            for c in checks:  # a warning never stops the run, but it is said: what was left, and why
                if c.status == WARN:
                    self.out(f"  warn {c.name}" + (f" — {c.cause}" if c.cause else ""))
                    if c.fix:
                        self.out(f"    fix: {c.fix}")
        if not dry_run:
            run.finish()
        if dry_run and conflicts_seen:
            self.out(f"{conflicts_seen} conflict(s): apply stops before any write until each is renamed in the plan "
                     "or adopted with --adopt")
        return 0

    def _conflicts(self, found: list[tuple[Stage, Check]]) -> int:
        n = len(self.stages)
        for st, c in found:
            self.run.stage_failed(st.key, c)
        self.out(f"cannot start — {len(found)} object(s) exist that ghcr2gitea does not own (checked before "
                 "anything was written):")
        for st, c in found:
            self.out(f"  [{self.stages.index(st) + 1}/{n}] {st.title}: conflict {c.cause}")
            self.out(f"    fix: {c.fix}")
        return 1

    def _stop(self, head: str, check: Check, more: int = 0, stage: str = "", nothing_written: bool = False) -> int:
        self.run.stage_failed(stage, check)
        if nothing_written:
            self.out(f"{head}: cannot start — {check.name} (checked before anything was written)")
            self.out(f"  cause: {check.cause}")
            self.out(f"  fix:   {check.fix}")
            return 1
        self.out(f"{head}: FAILED — {check.name}")
        self.out(f"  cause: {check.cause}")
        self.out(f"  fix:   {check.fix}")
        if more:
            self.out(f"  ({more} more failing check(s) in this stage)")
        self.out("  stopped here; run the same command again once fixed — it continues from where the cluster is")
        return 1

    # ------------------------------------------------------------------ audit
    def audit(self) -> list[StageResult]:
        self.could_not_check = False
        results = []
        for st in self.stages:
            r = StageResult(st)
            try:
                r.checks = st.verify(self.ctx)
            except StageFailed as e:
                r.checks = [e.check]
            except ClusterUnreachable:
                raise
            except Exception as e:  # noqa: BLE001 - one stage that cannot be checked must not hide the others
                if isinstance(e, ApiError) and e.status == 403:
                    # RBAC refused a read (an in-cluster audit's ServiceAccount lacks a rule): say which, as
                    # "forbidden: <verb> <resource>"
                    r.error = f"could not check: {e.forbidden}"
                    fix = (f"grant the audit's identity {e.forbidden.removeprefix('forbidden: ')} (`ghcr2gitea export "
                           "--audit-cronjob` writes the RBAC an audit needs)")
                    cause = str(e)
                else:
                    r.error = f"could not check: {type(e).__name__}: {e}"
                    fix, cause = "report this as a bug, with the audit output", r.error
                r.checks = [Check("stage could be checked", FAIL, mask(cause, *self.ctx.secrets), fix)]
                self.could_not_check = True
            results.append(r)
        return results


def audit_exit_code(results: list[StageResult]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


def render_audit(results: list[StageResult], cluster: dict, fmt: str, secrets=()) -> str:
    if fmt == "json":
        text = json.dumps({"cluster": cluster, "stages": [r.to_dict() for r in results]}, indent=2, default=str)
    elif fmt == "markdown":
        lines = [f"# ghcr2gitea audit — {cluster.get('server', '')}", "",
                 f"Kubernetes {cluster.get('version', '?')}, context `{cluster.get('context') or 'current'}`.", "",
                 "| Stage | Status | Check | Cause | Fix |", "|---|---|---|---|---|"]
        for r in results:
            for c in r.checks or [Check("—", r.status)]:
                lines.append(f"| {r.stage.title} | {c.status} | {c.name} | {_md(c.cause)} | {_md(c.fix)} |")
        text = "\n".join(lines) + "\n"
    else:
        lines = [f"audit of {cluster.get('server', '')} (Kubernetes {cluster.get('version', '?')})"]
        for i, r in enumerate(results, 1):
            lines.append(f"[{i}/{len(results)}] {r.stage.title}: {r.status}")
            for c in r.checks:
                mark = {"pass": "ok  ", "fail": "FAIL", "warn": "warn", "skip": "skip"}[c.status]
                lines.append(f"    {mark} {c.name}" + (f" — {c.cause}" if c.cause and c.status != PASS else ""))
                if c.status in (FAIL, WARN) and c.fix:
                    lines.append(f"         fix: {c.fix}")
        text = "\n".join(lines) + "\n"
    return mask(text, *secrets)


def _md(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")
