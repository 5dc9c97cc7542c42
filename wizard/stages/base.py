"""The stage protocol: inspect → plan → apply → verify, and the values they exchange.

Checks and changes are frozen dataclasses that render to text, JSON and the UI alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from .. import masking as M
from ..credentials import Secret, mask
from ..plan import Plan
from ..problem import Problem
from ..yamlsafe import dump_block


class Status(StrEnum):
    """A check's outcome. A ``str`` (``Status.PASS == "pass"``): JSON, text and the screens show its value."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


PASS, FAIL, WARN, SKIP = Status.PASS, Status.FAIL, Status.WARN, Status.SKIP


@dataclass(frozen=True)
class Check:
    """One gating check: pass/fail/warn/skip, with the cause and the fix on one line each."""

    name: str
    status: Status
    cause: str = ""
    fix: str = ""
    evidence: dict | str = ""
    gating: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))  # "fail" → Status.FAIL; a typo raises here

    @property
    def ok(self) -> bool:
        return self.status in (PASS, SKIP) or (self.status == WARN)

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "cause": self.cause, "fix": self.fix,
                "evidence": self.evidence}

    @property
    def problem(self) -> Problem:
        return Problem(self.cause, self.fix, self.evidence)

    @classmethod
    def of(cls, name: str, problem: Problem, status: Status = Status.FAIL) -> Check:
        """The check named ``name`` that failed with ``problem`` (a Failure's, a StageFailed's)."""
        return cls(name, status, problem.cause, problem.fix, problem.evidence)


def passed(name: str, evidence: dict | str = "", cause: str = "") -> Check:
    return Check(name, PASS, cause=cause, evidence=evidence)


def failed(name: str, cause: str, fix: str, evidence: dict | str = "") -> Check:
    return Check(name, FAIL, cause, fix, evidence)


def skipped(name: str, cause: str, fix: str = "") -> Check:
    return Check(name, SKIP, cause, fix)


@dataclass(frozen=True)
class Change:
    """One thing a stage would change, shown as a diff before it is applied."""

    target: str  # "Secret default/gitea-registry-push", "node dellmini1:/etc/rancher/k3s/registries.yaml"
    action: str  # create | update | write | restart | delete
    diff: str = ""  # unified diff with secrets masked
    payload: Any = field(default=None, compare=False, repr=False)  # what apply needs; never rendered
    note: str = ""  # one line after the target: why a conflict is one and how to resolve it

    def to_dict(self) -> dict:
        d = {"target": self.target, "action": self.action, "diff": self.diff}
        if self.note:
            d["note"] = self.note
        return d


@dataclass(frozen=True)
class Progress:
    stage: str
    message: str
    node: str | None = None
    phase: str | None = None  # per-node: queued | restarting | waiting | done | failed | skipped
    proofs: dict | None = None
    time: float = 0.0
    elapsed: float | None = None
    wrote: str = ""  # a node file this event says was written and read back (its path on ``node``)
    transfer: Any = None  # an image copy's ``wizard.images.copier.Progress`` (bytes and blobs of one image)


class Aborted(Exception):
    """The operator aborted: raised from the progress hook (or ``StopToken.check``), so the stage unwinds
    through its ``finally``s (probe and restart pods removed) before the run stops."""


class Paused(Exception):
    """apply() stopped between units of work because Pause was asked for; nothing failed. ``left``: what was
    not done yet (for the rolling restart: the nodes not restarted)."""

    def __init__(self, left: list[str]):
        super().__init__(", ".join(left))
        self.left = list(left)


class StopToken:
    """Pause and Abort, as the stage sees them (``ctx.stop``): Pause lets the unit of work under way finish
    (a node restarting), then the stage stops and raises ``Paused``; Abort stops at the next progress event."""

    def __init__(self) -> None:
        import threading
        self._pause = threading.Event()
        self._abort = threading.Event()

    def pause(self) -> None:
        self._pause.set()

    def abort(self) -> None:
        self._abort.set()

    def clear(self) -> None:
        """A new apply: neither asked for."""
        self._pause.clear()
        self._abort.clear()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    @property
    def aborted(self) -> bool:
        return self._abort.is_set()

    @property
    def stopping(self) -> bool:
        return self.paused or self.aborted

    def check(self) -> None:
        if self.aborted:
            raise Aborted("aborted by the operator")


class StageFailed(Exception):
    """apply() could not finish: the check that says why."""

    def __init__(self, check: Check):
        super().__init__(f"{check.name}: {check.cause}")
        self.check = check

    @property
    def problem(self) -> Problem:
        return self.check.problem


@dataclass(frozen=True)
class Observation:
    """What a stage's ``inspect()`` found: one typed value per stage, a frozen dataclass whose fields are read by
    its ``plan()`` and shown, in field order, by the faces (``session.describe_observed``). This base has no
    field: the stage only checks."""

    def items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


@dataclass
class RunCache:
    """Facts shared between stages in one run, each read once: typed fields, never string keys.

    A field left at its default has not been read yet; a stage that changes what a fact describes
    resets it (e.g. Node registries after writing, the auth proxy after replacing its certificate)."""

    nodes: list | None = None  # [kube.NodeInfo] sorted by name: stage Preflight's discover_nodes
    coredns_ip: str | None = None  # kube-dns's ClusterIP (None: absent or not an IP); read when coredns_read
    coredns_read: bool = False
    node_facts: dict | None = None  # node name → registries.NodeFacts, from one run of the facts script
    proxy_cert: Any = None  # certs.ProxyCert made this run (the auth proxy's and the realm's certificate)
    images_report: dict | None = None  # the last copy's report (images.copier.CopyReport.to_dict())
    authflow: dict = field(default_factory=dict)  # audit: flow name → authflow.Flow, all run at once
    authflow_timing: list = field(default_factory=list)  # each concurrent run: wall_ms and checks_ms
    verify_timing: dict | None = None  # stage Verify: wall_ms and parts_ms per vantage point


@dataclass
class Context:
    """What a stage works with: the plan, the cluster, the token and where to report progress."""

    plan: Plan
    cluster: Any  # ClusterReader in audit mode, Cluster otherwise
    token: Secret | None
    audit: bool = False
    ghcr_token: Secret | None = None  # the source registry's (GHCR_TOKEN / --ghcr-token-file); None: see stage Images
    node_probes: bool = False  # audit: allow read-only probe pods
    progress: Callable[[Progress], None] = lambda p: None
    node_timeout: float = 180.0
    max_unavailable: int = 1
    dry_run: bool = False
    cache: RunCache = field(default_factory=RunCache)  # facts shared between stages in one run
    stop: StopToken = field(default_factory=StopToken)  # Pause / Abort, from the UI (never set headless)
    retired_secrets: tuple = ()  # secrets this run replaces (rotate-token's old token): masked like the token
    node_backups: dict = field(default_factory=dict)  # node → the registries.yaml backup this run wrote there
    # an undo record for the run's journal (the Run sets it): how to take one change back ({"what": …}); the
    # record is written BEFORE the change it undoes, so a crash in between leaves a record, never a change without
    record: Callable[[dict], None] = lambda event: None

    def undo(self, what: str, **fields) -> None:
        self.record({"type": "undo", "what": what, **fields})

    def say(self, stage: str, message: str, **kw) -> None:
        import time
        self.progress(Progress(stage, message, time=time.time(), **kw))

    @property
    def secrets(self) -> tuple:
        return (self.token, self.ghcr_token, *self.retired_secrets)


class Stage:
    """One step of the migration. The verbs, in the order a run calls them:

    - ``inspect(ctx) -> Observation``: what is there now, as the stage's own Observation dataclass (reads
      only); ``StageFailed`` when it cannot tell.
    - ``plan(ctx, observed: Observation) -> list[Change]``: what would change ([] = nothing); ``StageFailed`` on bad input.
    - ``conflicts(ctx) -> list[Check]`` and ``precheck(ctx) -> list[Check]``: before the run's first write.
    - ``apply(ctx, changes) -> None``: make the changes; ``StageFailed`` (why), ``Paused`` (``ctx.stop``
      asked for a pause between units of work), ``Aborted`` (``ctx.stop`` asked for an abort).
    - ``verify(ctx) -> list[Check]``: the gating checks, now.

    Class attributes say how the faces show it: ``view`` names a special view ("rollout": the per-node
    rollout table), ``node_probes`` says inspect needs probe pods (an audit skips it without
    --node-probes). Nothing outside the stage tests its ``key``.
    """

    key: str = ""
    title: str = ""
    guide_step: str = ""
    description: str = ""
    view: str = ""  # "" (the stage view only) | "rollout"
    node_probes: bool = False  # inspect() starts probe pods

    def dry_run(self, ctx: Context, changes: list[Change]) -> list[str]:
        """Extra lines for ``apply --dry-run`` (how the changes would be carried out)."""
        return []

    def inspect(self, ctx: Context) -> Observation:
        return Observation()

    def plan(self, ctx: Context, observed: Observation) -> list[Change]:
        return []

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        for _ in changes:
            pass

    def verify(self, ctx: Context) -> list[Check]:
        return []

    def precheck(self, ctx: Context) -> list[Check]:
        """Checks run before the run's first write, so bad input stops it with nothing half-done."""
        return []

    def conflicts(self, ctx: Context) -> list[Check]:
        """Existing objects this stage would write that the wizard does not own (reads only; run before
        every other precheck, whose probes may create pods)."""
        return []


# ------------------------------------------------------------------ diffs
# Every diff masks BY STRUCTURE first (wizard/masking.py: credential fields, Secret data, dockerconfigjson
# auths, PEM keys), then searches for the token's value as a second belt.
mask_object = M.mask_object


_NOISE = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink")


def comparable(obj: dict | None, desired: dict | None = None) -> dict | None:
    """The live object reduced to what the desired object sets (so server defaults don't show as diffs)."""
    if obj is None:
        return None
    if desired is None:
        out = {k: v for k, v in obj.items() if k != "status"}
        out["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k not in _NOISE}
        return out
    return _project(obj, desired)


def _project(live, want):
    if isinstance(want, dict) and isinstance(live, dict):
        return {k: _project(live[k], v) for k, v in want.items() if k in live}
    if isinstance(want, list) and isinstance(live, list):
        if all(isinstance(x, dict) and "name" in x for x in want) and all(isinstance(x, dict) for x in live):
            by_name = {x.get("name"): x for x in live}
            return [_project(by_name[w["name"]], w) for w in want if w["name"] in by_name]
        if len(live) == len(want):  # positional lists (ports, paths): compare what we set, item by item
            return [_project(a, b) for a, b in zip(live, want, strict=True)]
        return live
    return live


def object_diff(before: dict | None, after: dict | None, title: str, *secrets: Secret | None) -> str:
    """Live → planned object as a unified diff of their YAML, masked; multi-line values (an nginx config, a PEM
    certificate) as literal blocks, so a config reads as its file and a changed line is one diff line."""
    a = dump_block(mask_object(before), sort_keys=True).splitlines() if before else []
    b = dump_block(mask_object(after), sort_keys=True).splitlines() if after else []
    text = "\n".join(difflib.unified_diff(a, b, f"live/{title}", f"planned/{title}", lineterm="", n=2))
    return mask(text, *secrets)


def text_diff(before: str | None, after: str | None, title: str, *secrets: Secret | None) -> str:
    before, after = M.mask_yaml_text(before), M.mask_yaml_text(after)
    text = "\n".join(difflib.unified_diff((before or "").splitlines(), (after or "").splitlines(),
                                          f"live/{title}", f"planned/{title}", lineterm="", n=2))
    return mask(text, *secrets)
