"""The one ownership rule: an object that exists without ``app.kubernetes.io/managed-by=ghcr2gitea`` is
not the wizard's, and is never modified or deleted unless the operator adopted it explicitly
(``--adopt KIND/NAMESPACE/NAME``, or the typed confirmation in the wizard).

``Cluster`` (wizard/cluster.py) enforces it on every apply, patch and delete, so no stage can forget
it; ``ObjectStage.plan`` and the prechecks report the same objects as conflicts before any write, so
a normal run never reaches the write layer's refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "ghcr2gitea"
FIELD_MANAGER = "ghcr2gitea"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, order=True)
class Ref:
    """One object: kind, namespace ("" when cluster-scoped) and name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:  # "Secret default/gitea-registry-push", as the plan's targets read
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"

    @property
    def adopt_arg(self) -> str:
        return "/".join(p for p in (self.kind, self.namespace, self.name) if p)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}


def parse_ref(text: str) -> Ref:
    """``KIND/NAMESPACE/NAME`` (``KIND/NAME`` for cluster-scoped kinds); ValueError names the fix."""
    from .cluster import KINDS
    parts = text.strip().split("/")
    hint = "write KIND/NAMESPACE/NAME (cluster-scoped kinds: KIND/NAME), e.g. Secret/default/gitea-registry-push"
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"--adopt {text!r}: {hint}")
    kind = next((k for k in KINDS if k.lower() == parts[0].lower()), None)
    if kind is None:
        raise ValueError(f"--adopt {text!r}: unknown kind {parts[0]!r}; known: {', '.join(sorted(KINDS))}")
    namespaced = KINDS[kind].namespaced
    if namespaced != (len(parts) == 3):
        raise ValueError(f"--adopt {text!r}: {kind} is {'namespaced' if namespaced else 'cluster-scoped'}; {hint}")
    for p in parts[1:]:
        if not _NAME.match(p):
            raise ValueError(f"--adopt {text!r}: {p!r} is not a Kubernetes name (lowercase letters, digits, '-', "
                             "'.'); " + hint)
    return Ref(kind, parts[1] if namespaced else "", parts[-1])


def ref_of(obj: dict) -> Ref:
    md = obj.get("metadata") or {}
    return Ref(obj.get("kind", ""), md.get("namespace") or "", md.get("name", ""))


def owned(obj: dict | None) -> bool:
    """True when the live object carries the wizard's managed-by label (created or adopted by it)."""
    return ((obj or {}).get("metadata", {}).get("labels") or {}).get(MANAGED_BY_KEY) == MANAGED_BY_VALUE


def managers(obj: dict) -> list[str]:
    """The field managers that wrote the object (who owns it, as far as the API can tell)."""
    out = []
    for e in (obj.get("metadata") or {}).get("managedFields") or []:
        m = e.get("manager") or "?"
        if m not in out:
            out.append(m)
    return out


def why(live: dict) -> str:
    who = managers(live)
    return "exists and is not managed by ghcr2gitea" + (f" (owned by field managers: {', '.join(who)})" if who
                                                          else "")


def explain(ref: Ref, live: dict, rename: str | None = None) -> tuple[str, str]:
    """(cause, fix) for an existing object the wizard does not own."""
    cause = f"{ref}: {why(live)}"
    adopt = f"adopt it with --adopt {ref.adopt_arg}"
    fix = (f"rename it in the plan ({rename}) or {adopt}" if rename
           else f"remove or rename that object yourself, or {adopt}")
    return cause, fix


class NotOwned(Exception):
    """The write layer refused to change an object the wizard does not own (and was not told to adopt)."""

    def __init__(self, ref: Ref, live: dict, verb: str, rename: str | None = None):
        self.ref, self.verb = ref, verb
        self.cause, self.fix = explain(ref, live, rename)
        super().__init__(f"refused to {verb} {self.cause}; {self.fix}")


def conflict(live: dict | None, ref: Ref, adopted) -> bool:
    """An existing object the wizard may not touch: not labelled as the wizard's and not adopted."""
    return live is not None and not owned(live) and ref not in adopted


def plan_field(plan, name: str, namespace: str = "") -> str | None:
    """The plan key (``secrets.push``) whose value is this object's name, to say what to rename."""
    from .plan import SCHEMA
    for section, keys in SCHEMA.items():
        for key, attr in keys.items():
            if "namespace" in key:
                continue
            if getattr(plan, attr, None) == name:
                return f"{section}.{key}"
    return None
