"""``ghcr2gitea rollback``: the way back from a migration, proven like the way forward.

The migration's stages record, in the run's journal and before each write, how to take it back (``undo``
events: wizard/journal.py). The rollback reads those records — from the local journal or, when the laptop
is lost, from the cluster's ConfigMap mirror — and runs four stages of its own through the same ``Run``
(lock, journal of its own, crash points, resume) and the same ``Runner`` (plan, dry run, exit codes):

1. Workloads back: every patched workload gets back the images and pull secrets recorded before it was
   patched (tags and digests as they were), with rollout waits; manifest files get the reverse surgical
   edit (comments kept); nothing else of them is touched.
2. Node registries back: a node whose registries.yaml is byte for byte what the wizard wrote (sha256 on the
   node) gets the wizard's backup back (or loses the file the wizard created); any other file keeps
   everything but the entries the wizard added. The CA bundle likewise.
3. Rolling restart: the same proven restart, servers first, quorum guard; its last proof is that
   containerd's regenerated config no longer holds the registry hosts.
4. The wizard's objects: those it created (managed-by label and a record in the journal) are deleted;
   the operator's objects it patched get the fields back; adopted ones are left unless ``--adopted
   restore``. The generated workflow file is removed only if unchanged since it was written.

Images copied to Gitea stay, and nothing on GHCR is touched. Each stage re-reads the cluster, so a rerun
after any interruption does only what is left.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import manifests as M
from . import ownership as O
from . import registries as R
from .fsutil import write_atomic
from .script import Script
from .stages.base import (
    WARN,
    Change,
    Check,
    Context,
    Observation,
    Stage,
    StageFailed,
    failed,
    object_diff,
    passed,
    text_diff,
)
from .stages.images import pod_spec
from .stages.nodes import node_exec, node_facts
from .stages.pods import wait_rollout
from .stages.rolling_restart import RollingRestartStage
from .stages.workloads import _readiness, template_refs

Key = tuple[str, str, str]  # (kind, namespace, name)


# ---------------------------------------------------------------------- the records
@dataclass
class Undo:
    """The migration's undo records, folded: the first record of a thing says how it was before the wizard
    first changed it; a later write (a rerun, rotate-token) only updates what the wizard last wrote."""

    workloads: dict[Key, dict] = field(default_factory=dict)
    manifests: dict[str, dict] = field(default_factory=dict)
    node_files: dict[str, dict] = field(default_factory=dict)
    ca_files: dict[str, dict] = field(default_factory=dict)
    created: list[Key] = field(default_factory=list)
    patched: dict[Key, dict] = field(default_factory=dict)
    adopted: dict[Key, dict] = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def of(cls, events: list[dict]) -> Undo:
        u = cls()
        for e in events:
            what = e.get("what")
            key = (e.get("kind", ""), e.get("namespace", ""), e.get("name", ""))
            if what == "workload":
                u.workloads.setdefault(key, e["before"])
            elif what == "manifest":
                u.manifests.setdefault(e["path"], e)
            elif what == "node_file":
                u.node_files.setdefault(e["node"], dict(e, sha256=None))
            elif what == "node_file_written" and e["node"] in u.node_files:
                u.node_files[e["node"]]["sha256"] = e["sha256"]
            elif what == "ca_file":
                first = u.ca_files.setdefault(e["node"], dict(e))
                first["sha256"] = e["sha256"]
            elif what == "created" and key not in u.created:
                u.created.append(key)
            elif what == "patched":
                u.patched.setdefault(key, e)
            elif what == "adopted":
                u.adopted.setdefault(key, e)
            elif what == "file":
                first = u.files.setdefault(e["path"], dict(e))
                first["sha256"] = e["sha256"]
        return u

    @property
    def empty(self) -> bool:
        return not any((self.workloads, self.manifests, self.node_files, self.ca_files, self.created, self.patched,
                        self.adopted, self.files))


def _key_text(key: Key) -> str:
    kind, ns, name = key
    return f"{kind} {ns + '/' if ns else ''}{name}"


# ---------------------------------------------------------------------- 1. workloads
def revert_text(text: str, rec: dict) -> str | None:
    """The file with each of the rewrite's edits taken back, or None when the file no longer holds them where
    they were written (it changed since: the operator edits it by hand)."""
    out = text
    for e in sorted(rec["edits"], key=lambda e: e["at"], reverse=True):
        at, new = int(e["at"]), e["new"]
        if out[at:at + len(new)] != new:
            return None
        out = out[:at] + e["old"] + out[at + len(new):]
    return out


def _workload_ops(kind: str, live: dict, before: dict) -> list[dict]:
    """A JSON patch putting ``before``'s images (by container name) and pull secrets back, each change tested
    against the container it was read from."""
    prefix = "/spec/jobTemplate/spec/template/spec" if kind == "CronJob" else "/spec/template/spec"
    spec = pod_spec(kind, live)
    ops: list[dict] = []
    for key in ("initContainers", "containers"):
        was = {c["name"]: c["image"] for c in before.get(key) or []}
        for i, c in enumerate(spec.get(key) or []):
            image = was.get(c.get("name"))
            if image is not None and c.get("image") != image:
                ops += [{"op": "test", "path": f"{prefix}/{key}/{i}/name", "value": c["name"]},
                        {"op": "replace", "path": f"{prefix}/{key}/{i}/image", "value": image}]
    secrets = before.get("imagePullSecrets") or []
    now = [{"name": s.get("name")} for s in spec.get("imagePullSecrets") or []]
    if now != secrets:
        if secrets:
            ops.append({"op": "add", "path": f"{prefix}/imagePullSecrets", "value": secrets})
        else:
            ops.append({"op": "remove", "path": f"{prefix}/imagePullSecrets"})
    return ops


@dataclass(frozen=True)
class WorkloadsBackSeen(Observation):
    """Each recorded workload as it is now (None: gone) and each recorded manifest file's text (None: gone)."""

    live: dict[Key, dict | None]
    files: dict[str, str | None]


class WorkloadsBack(Stage):
    key, title, guide_step = "rollback-workloads", "Workloads back", "Rollback 1/4"
    description = ("Every workload the migration patched gets back the images and imagePullSecrets recorded before "
                   "it was patched (tags and digests as they were), with rollout waits; each manifest file gets the "
                   "reverse of the wizard's surgical edit (comments and layout kept).")

    def __init__(self, undo: Undo):
        self.undo = undo

    def inspect(self, ctx: Context) -> WorkloadsBackSeen:
        live = {k: ctx.cluster.get(k[0], k[2], k[1]) for k in self.undo.workloads}
        files = {}
        for path in self.undo.manifests:
            try:
                files[path] = M.read_text(path)
            except M.ManifestError:
                files[path] = None
        return WorkloadsBackSeen(live, files)

    def plan(self, ctx: Context, observed: WorkloadsBackSeen) -> list[Change]:
        changes = []
        for path, rec in self.undo.manifests.items():
            text = observed.files.get(path)
            if text is None:
                continue
            back = revert_text(text, rec)
            if back is not None and back != text:
                changes.append(Change(f"file {path}", "write", text_diff(text, back, path, *ctx.secrets),
                                      (path, text, back)))
        for key, before in self.undo.workloads.items():
            live = observed.live.get(key)
            if live is None:
                continue
            now = template_refs(pod_spec(key[0], live))
            if _comparable(now, before) != _comparable(before, before):
                target = _key_text(key)
                changes.append(Change(target, "update", object_diff(_comparable(now, before),
                                                                    _comparable(before, before), target),
                                      (key, before)))
        return changes

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        for ch in changes:
            if isinstance(ch.payload[0], str):  # a manifest file
                path, text, back = ch.payload
                ctx.say(self.key, f"write {ch.target}")
                try:
                    if M.read_text(path) != text:
                        raise M.ManifestError(path, "changed on disk since it was read; nothing written — run again")
                    write_atomic(path, back.encode("utf-8"))
                except (M.ManifestError, OSError) as e:
                    raise StageFailed(failed("manifest file put back", str(e), "check the file and run again")) \
                        from None
        rolled = []
        for ch in changes:
            if isinstance(ch.payload[0], str):
                continue
            (kind, ns, name), before = ch.payload
            live = ctx.cluster.get(kind, name, ns)
            if live is None:
                continue
            ops = _workload_ops(kind, live, before)
            if ops:
                ctx.say(self.key, f"patch {ch.target}")
                ctx.cluster.patch(kind, name, ns, ops, patch_type="json", named_by_plan=True)
                rolled.append((kind, name, ns))
        for kind, name, ns in rolled:
            if kind in ("Deployment", "StatefulSet"):
                wait_rollout(ctx, kind, name, ns, self.key, timeout=max(60.0, ctx.node_timeout))

    def verify(self, ctx: Context) -> list[Check]:
        checks = []
        seen = self.inspect(ctx)
        for key, before in self.undo.workloads.items():
            live = seen.live.get(key)
            name = _key_text(key)
            if live is None:
                checks.append(passed(name, cause="gone (nothing to put back)"))
                continue
            now = template_refs(pod_spec(key[0], live))
            if _comparable(now, before) != _comparable(before, before):
                checks.append(failed(name, "does not run the images it ran before the migration",
                                     "apply stage Workloads back"))
                continue
            if key[0] in ("Deployment", "StatefulSet", "DaemonSet"):
                ready, want = _readiness(key[0], live)
                if ready < want:
                    checks.append(failed(name, f"{ready}/{want} ready on its original images",
                                         "see the pod events (kubectl describe pod)"))
                    continue
            checks.append(passed(name, {"images": [c["image"] for c in before.get("containers") or []]}))
        for path, rec in self.undo.manifests.items():
            text = seen.files.get(path)
            if text is None:
                continue
            if revert_text(text, rec) is None and any(e["new"] in text for e in rec["edits"]):
                checks.append(Check(f"file {path}", WARN, "changed since the wizard rewrote it: its edits were not "
                                    "taken back", "edit the image references back by hand", gating=False))
            elif revert_text(text, rec) is None or revert_text(text, rec) == text:
                checks.append(passed(f"file {path}"))
            else:
                checks.append(failed(f"file {path}", "still holds the wizard's edits", "apply stage Workloads back"))
        return checks or [passed("no workload was patched by the migration")]


def _comparable(now: dict, before: dict) -> dict:
    """``now`` reduced to the containers ``before`` names (a container added since is not the wizard's)."""
    out = {}
    for key in ("initContainers", "containers"):
        names = {c["name"] for c in before.get(key) or []}
        out[key] = sorted((c["name"], c["image"]) for c in now.get(key) or [] if c["name"] in names)
    out["imagePullSecrets"] = [s["name"] for s in now.get("imagePullSecrets") or []]
    return out


# ---------------------------------------------------------------------- 2. node files
RESTORE_EXIT = 3
RESTORE_CHANGED = "registries.yaml changed since the wizard read it; run again"


def node_state_script(backup: str | None, ca_backup: str | None) -> Script:
    """Read-only: the sha256 of registries.yaml and of the CA bundle, and whether the backups are there."""
    s = Script()
    s.add("export LC_ALL=C")
    s.add("F={path}", path=R.PATH)
    s.add('[ -f "$F" ] && echo "file_sha256=$(sha256sum < "$F")" || echo "file_sha256=absent"')
    if backup:
        s.add("[ -f {b} ] && echo backup=present || echo backup=absent", b=backup)
    if ca_backup:
        s.add("[ -f {b} ] && echo ca_backup=present || echo ca_backup=absent", b=ca_backup)
    return s


def restore_script(path: str, sha: str, backup: str | None) -> Script:
    """Put ``backup`` back as ``path`` (None: remove ``path``, which the wizard created), but only while
    ``path`` is byte for byte the file the wizard wrote; the backup goes (the file now holds it)."""
    s = Script(strict=True)
    s.add("export LC_ALL=C")
    s.add("F={path}", path=path)
    want = sha + "  -"
    s.add('[ "$(sha256sum < "$F")" = {want} ] || echo {msg}', want=want, msg=RESTORE_CHANGED)
    s.add('[ "$(sha256sum < "$F")" = {want} ] || exit {code}', want=want, code=RESTORE_EXIT)
    if backup is None:
        s.add('rm -f "$F"')
    else:
        s.add("T={tmp}", tmp=path + ".ghcr2gitea-tmp")
        s.add('cp -p {b} "$T"', b=backup)
        s.add('touch "$T"')  # a new mtime: k3s reloads what changed after it started
        s.add('mv "$T" "$F"')
        s.add("rm -f {b}", b=backup)
    s.add("echo restored")
    return s


def unmerge(node: str, lay: R.Layout, hosts: list[str], drop_configs: bool) -> R.NodePlan:
    """The node's file without the entries of ``hosts`` (and the ``configs:`` key the wizard added, once
    empty): every other line kept as the node has it, spliced on the node (R.write_script)."""
    cut = sorted(lay.entries[h] for h in hosts)
    if drop_configs and lay.configs is not None and len(lay.entries) == len(hosts):
        cut = [lay.configs]
    keep, cur = [], 0
    for a, b in cut:
        if a > cur:
            keep.append((cur, a))
        cur = max(cur, b)
    if cur < len(lay.lines):
        keep.append((cur, len(lay.lines)))
    ops = tuple(("keep", a + 1, b) for a, b in keep)
    new = "".join(line for a, b in keep for line in lay.lines[a:b])
    old = "".join(lay.lines)
    return R.NodePlan(node, True, ops, (), hashlib.sha256(old.encode()).hexdigest(), new, (), old, new)


@dataclass(frozen=True)
class NodeState:
    file_sha: str | None  # None: absent
    backup: bool
    ca_backup: bool


@dataclass(frozen=True)
class NodeFilesSeen(Observation):
    facts: dict[str, R.NodeFacts]
    state: dict[str, NodeState]


@dataclass(frozen=True)
class Restore:
    node: str
    path: str
    sha: str
    backup: str | None


class NodeFilesBack(Stage):
    key, title, guide_step = "rollback-registries", "Node registries back", "Rollback 2/4"
    node_probes = True
    description = ("Each node's registries.yaml returns to what it was: the wizard's backup when the file is byte "
                   "for byte what the wizard wrote (sha256 compared on the node), else only the entries the wizard "
                   "added are removed and everything else the node has is kept. The CA bundle likewise.")

    def __init__(self, undo: Undo):
        self.undo = undo

    def inspect(self, ctx: Context) -> NodeFilesSeen:
        facts = node_facts(ctx)
        nodes = [n for n in {**self.undo.node_files, **self.undo.ca_files} if n in facts]
        scripts = {n: node_state_script((self.undo.node_files.get(n) or {}).get("backup"),
                                        (self.undo.ca_files.get(n) or {}).get("backup")).text() for n in nodes}
        results = node_exec(ctx).run_many(scripts, stage=self.key, purpose="facts", timeout=ctx.node_timeout) \
            if scripts else {}
        state = {}
        for n, r in results.items():
            if not r.ok:
                raise StageFailed(failed("node files read", f"{n}: the probe pod {r.phase.lower()}",
                                         f"check that privileged pods can run on {n}"))
            kv = dict(line.partition("=")[::2] for line in r.output.splitlines() if "=" in line)
            sha = kv.get("file_sha256", "absent")
            state[n] = NodeState(None if sha == "absent" else sha.split()[0], kv.get("backup") == "present",
                                 kv.get("ca_backup") == "present")
        return NodeFilesSeen(facts, state)

    def plan(self, ctx: Context, observed: NodeFilesSeen) -> list[Change]:
        changes = []
        for node, rec in self.undo.node_files.items():
            f, st = observed.facts.get(node), observed.state.get(node)
            if f is None or st is None or st.file_sha is None:
                continue
            target = f"node {node}:{R.PATH}"
            if rec.get("sha256") and st.file_sha == rec["sha256"] and (not rec["had_file"] or st.backup):
                backup = rec["backup"] if rec["had_file"] else None
                after = "" if backup is None else f"(the backup {backup}, as it was before the migration)\n"
                changes.append(Change(target, "write" if backup else "delete",
                                      text_diff(f.text, after, f"{node}{R.PATH}", *ctx.secrets),
                                      Restore(node, R.PATH, rec["sha256"], backup),
                                      note="byte for byte what the wizard wrote: "
                                      + ("the backup goes back" if backup else "the wizard created it")))
                continue
            if f.text is None:
                continue
            try:
                lay = R.layout(f.text, f"{node}:{R.PATH}")
            except R.RegistriesInvalid as e:
                raise StageFailed(failed("registries.yaml readable", str(e), "fix the file on that node by hand, "
                                         "then run rollback again; nothing was written")) from None
            hosts = [h for h in rec.get("added") or [] if h in lay.entries]
            if hosts:
                np = unmerge(node, lay, hosts, bool(rec.get("configs_added")))
                changes.append(Change(target, "write", text_diff(f.text, np.new_masked, f"{node}{R.PATH}",
                                                                 *ctx.secrets), np,
                                      note=f"changed since the wizard wrote it: only the entries it added "
                                      f"({', '.join(hosts)}) are removed"))
        for node, rec in self.undo.ca_files.items():
            f, st = observed.facts.get(node), observed.state.get(node)
            if f is None or st is None or not f.ca_present or f.ca_sha != rec["sha256"]:
                continue
            if rec["had_file"] and not st.ca_backup:
                continue
            backup = rec["backup"] if rec["had_file"] else None
            changes.append(Change(f"node {node}:{R.CA_PATH}", "write" if backup else "delete",
                                  f"the CA bundle the wizard wrote → {backup or 'removed'}",
                                  Restore(node, R.CA_PATH, rec["sha256"], backup)))
        return changes

    def dry_run(self, ctx: Context, changes: list[Change]) -> list[str]:
        nodes = sorted({ch.payload.node for ch in changes})
        return [f"then k3s restarts on {', '.join(nodes)} (stage Rolling restart), each proven: containerd drops "
                "the registry hosts"] if nodes else []

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        if not changes:
            return
        scripts: dict[str, list[Script]] = {}
        for ch in changes:
            p = ch.payload
            if isinstance(p, Restore):
                scripts.setdefault(p.node, []).append(restore_script(p.path, p.sha, p.backup))
            else:
                scripts.setdefault(p.node, []).append(R.write_script(p, None, secret="unused"))
        ctx.say(self.key, f"putting registries.yaml back on {len(scripts)} node(s)")
        rounds = max(len(v) for v in scripts.values())
        for i in range(rounds):  # a node's CA bundle after its registries.yaml: never a file naming a missing CA
            batch = {n: v[i].text() for n, v in scripts.items() if i < len(v)}
            results = node_exec(ctx).run_many(batch, stage=self.key, purpose="write", timeout=ctx.node_timeout)
            bad = {n: r for n, r in results.items() if not r.ok}
            if bad:
                n, r = next(iter(bad.items()))
                if r.exit_code in (RESTORE_EXIT, R.CHANGED_EXIT):
                    raise StageFailed(failed("registries.yaml put back", f"{n}: {RESTORE_CHANGED} (nothing was "
                                             "written on that node)", "run rollback again"))
                raise StageFailed(failed("registries.yaml put back", f"{n}: write failed (exit {r.exit_code}): "
                                         f"{r.output.strip()[-200:]}", "check the node's /etc/rancher/k3s"))
        facts = node_facts(ctx, fresh=True)
        for node in scripts:
            ctx.say(self.key, f"{node}: registries.yaml put back and read back", node=node, wrote=R.PATH)
            added = (self.undo.node_files.get(node) or {}).get("added") or []
            if _holds(facts[node], added):
                raise StageFailed(failed("registries.yaml read back", f"{node}: still holds the wizard's entries",
                                         "run rollback again; check nothing else manages the file"))

    def verify(self, ctx: Context) -> list[Check]:
        facts = node_facts(ctx, fresh=True)
        checks = []
        for node, rec in self.undo.node_files.items():
            f = facts.get(node)
            if f is None:
                continue
            left = [h for h in rec.get("added") or [] if _holds(f, [h])]
            if left:
                checks.append(failed(f"{node}: registries.yaml", f"still holds the wizard's entries for "
                                     f"{', '.join(left)}", "apply stage Node registries back"))
            else:
                checks.append(passed(f"{node}: registries.yaml", cause="holds no entry the wizard added"))
        for node, rec in self.undo.ca_files.items():
            f = facts.get(node)
            if f is not None and f.ca_present and f.ca_sha == rec["sha256"]:
                checks.append(failed(f"{node}: CA bundle", f"{R.CA_PATH} is still the wizard's",
                                     "apply stage Node registries back"))
        return checks or [passed("no node file was written by the migration")]


def _holds(f: R.NodeFacts, hosts: list[str]) -> bool:
    try:
        configs = (R.parse(f.text).get("configs") or {}) if f.text is not None else {}
    except R.RegistriesInvalid:
        return False
    return any(h in configs for h in hosts)


# ---------------------------------------------------------------------- 3. restart
class RestartBack(RollingRestartStage):
    key, title, guide_step = "rollback-restart", "Rolling restart", "Rollback 3/4"
    description = ("K3s reads registries.yaml only at start: every node whose containerd still holds the registry "
                   "hosts restarts, servers one at a time under the quorum guard, then agents; each restart is "
                   "proven like the migration's, and its last proof is that containerd's regenerated config no "
                   "longer names the hosts registries.yaml dropped.")
    undo_restart = True
    loaded_name = "containerd dropped the registry hosts"


# ---------------------------------------------------------------------- 4. objects
@dataclass(frozen=True)
class ObjectsSeen(Observation):
    live: dict[Key, dict | None]
    files: dict[str, str | None]  # sha256 of each recorded generated file now (None: gone)


# the order objects go: what uses a thing before the thing (the Ingress before its Service, the proxy before
# its Secrets, bindings before roles)
_ORDER = ("Ingress", "IngressRoute", "Middleware", "RoleBinding", "ClusterRoleBinding", "Role", "ClusterRole",
          "Deployment", "Service", "ConfigMap", "ServiceAccount", "Secret")


class ObjectsBack(Stage):
    key, title, guide_step = "rollback-objects", "Wizard's objects", "Rollback 4/4"
    description = ("The objects the migration created (managed-by label, and recorded in the journal) are deleted; "
                   "the operator's objects it extended get those fields back; objects it adopted are left as they are "
                   "unless `--adopted restore`. The generated CI workflow is removed only if unchanged since written. "
                   "Images copied to Gitea stay; nothing on GHCR is touched.")

    def __init__(self, undo: Undo, restore_adopted: bool = False):
        self.undo = undo
        self.restore_adopted = restore_adopted

    def _keys(self) -> list[Key]:
        keys = [*self.undo.created, *self.undo.patched, *self.undo.adopted]
        return list(dict.fromkeys(keys))

    def inspect(self, ctx: Context) -> ObjectsSeen:
        live = {k: ctx.cluster.get(k[0], k[2], k[1] or None) for k in self._keys()}
        files = {}
        for path in self.undo.files:
            try:
                files[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            except OSError:
                files[path] = None
        return ObjectsSeen(live, files)

    def plan(self, ctx: Context, observed: ObjectsSeen) -> list[Change]:
        changes = []
        for key, rec in list(self.undo.patched.items()) + (list(self.undo.adopted.items()) if self.restore_adopted
                                                            else []):
            live = observed.live.get(key)
            if live is None or not rec.get("reverse"):
                continue  # gone, or nothing recorded that can be put back (a Secret's data)
            if _merged(live, rec["reverse"]) != live:
                changes.append(Change(_key_text(key), "update", object_diff(live, _merged(live, rec["reverse"]),
                                                                          _key_text(key), *ctx.secrets),
                                      ("patch", key, rec["reverse"]),
                                      note="the fields the wizard set get their recorded values back"))
        created = sorted(self.undo.created, key=lambda k: _ORDER.index(k[0]) if k[0] in _ORDER else len(_ORDER))
        for key in created:
            live = observed.live.get(key)
            if live is None or not O.owned(live):
                continue  # gone, or replaced by someone else's object since: not the wizard's to delete
            changes.append(Change(_key_text(key), "delete", object_diff(live, None, _key_text(key), *ctx.secrets),
                                  ("delete", key, None)))
        for path, rec in self.undo.files.items():
            if not rec.get("existed") and observed.files.get(path) == rec["sha256"]:
                changes.append(Change(f"file {path}", "delete", "", ("file", path, rec["sha256"]),
                                      note="unchanged since the wizard wrote it"))
        return changes

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        for ch in changes:
            what, key, arg = ch.payload
            ctx.say(self.key, f"{ch.action} {ch.target}")
            if what == "patch":
                ctx.cluster.patch(key[0], key[2], key[1] or None, arg, patch_type="merge", named_by_plan=True)
            elif what == "delete":
                ctx.cluster.delete(key[0], key[2], key[1] or None)  # refused (NotOwned) unless still the wizard's
            else:
                path = Path(key)
                try:
                    if hashlib.sha256(path.read_bytes()).hexdigest() == arg:
                        path.unlink()
                except OSError as e:
                    raise StageFailed(failed("CI workflow removed", f"{path}: {e.strerror}",
                                             "remove it by hand")) from None

    def verify(self, ctx: Context) -> list[Check]:
        seen = self.inspect(ctx)
        checks = []
        for key in self.undo.created:
            live = seen.live.get(key)
            if live is not None and O.owned(live):
                checks.append(failed(_key_text(key), "still there", "apply stage Wizard's objects"))
        left = [k for k, rec in self.undo.adopted.items() if seen.live.get(k) is not None]
        if left and not self.restore_adopted:
            checks.append(Check("adopted objects", WARN, f"left as the migration made them: "
                                f"{', '.join(_key_text(k) for k in left)}",
                                "run rollback with --adopted restore to give them their recorded fields back "
                                "(a Secret's data was never recorded: restore it by hand)", gating=False))
        for path, rec in self.undo.files.items():
            if seen.files.get(path) is not None and not rec.get("existed"):
                state = "unchanged" if seen.files[path] == rec["sha256"] else "changed since the wizard wrote it"
                checks.append(Check(f"file {path}", WARN if state != "unchanged" else "fail",
                                    f"still there ({state})", "remove it by hand if it is no longer wanted"
                                    if state != "unchanged" else "apply stage Wizard's objects",
                                    gating=state == "unchanged"))
        checks.append(Check("images copied to Gitea", WARN, "stay in Gitea; nothing on GHCR was touched",
                            "delete them in Gitea (Packages) if they are no longer wanted", gating=False))
        return checks


def _merged(live: dict, patch: dict) -> dict:
    """RFC 7386 merge of ``patch`` into ``live`` (what the API server will make of it)."""
    out = dict(live)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merged(out[k], v)
        else:
            out[k] = v
    return out


def stages(undo: Undo, *, restore_adopted: bool = False) -> tuple[Stage, ...]:
    return (WorkloadsBack(undo), NodeFilesBack(undo), RestartBack(), ObjectsBack(undo, restore_adopted))


# ---------------------------------------------------------------------- the command
class Refused(Exception):
    """The rollback cannot start: no migration to take back (neither the local journal nor the cluster's mirror
    holds one), another run holds the cluster lock, or something else is applied (the wizard)."""


def load_undo(cluster) -> tuple[Undo, object]:
    """The undo records of the cluster's last migration, and its journal; ``Refused`` with what is missing."""
    from . import journal as J
    cid = J.cluster_id(cluster)
    found = J.Journal.load(cid, cluster)
    if found is None:
        raise Refused(f"no journal of a migration of this cluster: neither {J.journal_path(cid)} nor the ConfigMap "
                       f"{J.CONFIGMAP_NAMESPACE}/{J.CONFIGMAP} exists; rollback needs one of them (it holds the "
                       "images and node files as they were before the migration). Copy the journal file from the "
                       "machine that ran the migration, or undo the migration by hand (docs/usage.md, `rollback`)")
    undo = Undo.of(found.undo)
    if undo.empty:
        rolled = any(e.get("type") == J.ROLLED_BACK for e in found.events)
        raise Refused("the last migration of this cluster " + ("was already rolled back" if rolled else
                       "recorded no change to take back") + f" (journal {found.path}); nothing to do")
    return undo, found


def mark_rolled_back(journal, cluster) -> None:
    """The migration journal says its records are taken back: a later apply starts a new way back."""
    journal.mirror = cluster.sibling(patience=3) if hasattr(cluster, "sibling") else None
    journal.persist = True
    journal.record({"type": "rolled_back"})


ROLLED_BACK_LINE = ("rolled back: workloads on their original images, node files as they were, the wizard's objects "
                    "removed; the images copied to Gitea stay there, and nothing on GHCR was touched")


@dataclass(frozen=True)
class Outcome:
    """How a rollback ended: ``code`` as the command's exit code; ``line`` what to tell the operator last."""

    code: int
    line: str


def rollback(cluster, plan, *, out: Callable[[str], None], node_timeout: float, restore_adopted: bool = False,
             dry_run: bool = False, take_over_stale: bool = False, on_progress: Callable | None = None,
             stop=None) -> Outcome:
    """The rollback, for both faces: the four stages under the cluster lock, with a journal of their own
    (resumed when an earlier rollback stopped), then the migration's journal marked as taken back. ``Refused``
    when there is nothing to take back; ``LockHeld`` when another run holds the lock. ``out`` hears the stages'
    lines, ``on_progress`` every progress event (the rollout's per-node phases), ``stop`` Pause/Abort."""
    from .engine import Runner
    from .run import Run
    undo, journal = load_undo(cluster)
    ctx = Context(plan=plan, cluster=cluster, token=None, node_timeout=float(node_timeout))
    if stop is not None:
        ctx.stop = stop
    chosen = stages(undo, restore_adopted=restore_adopted)
    run = Run(ctx, chosen, journal_kind="rollback", take_over_stale=take_over_stale)
    if on_progress is not None:
        run.subscribe(on_progress)
    runner = Runner(ctx, out, chosen, run=run)
    if dry_run:
        out(f"rollback of the migration recorded in {journal.path} (dry run: nothing is changed)")
        return Outcome(runner.apply(dry_run=True), "")
    try:
        run.begin(resume_unfinished=True)
        code = runner.apply()
        if code != 0:
            return Outcome(code, "")
        mark_rolled_back(journal, cluster)
        return Outcome(0, ROLLED_BACK_LINE)
    finally:
        run.close()


def _err(msg: str) -> int:
    print(f"ghcr2gitea: {msg}", file=sys.stderr, flush=True)
    return 2


def run_rollback(args) -> int:
    from .commands import plan_or_report
    from .kube import ClusterUnreachable
    from .lock import LockHeld, LockLost
    from .run import connect
    plan = plan_or_report(args.plan, args.resolve)
    if plan is None:
        return 2
    if not (args.yes or args.dry_run):
        return _err("rollback changes every node and restarts k3s on each: pass --yes to confirm "
                    "(or --dry-run to see the plan of the rollback)")
    try:
        cluster = connect(plan, kubeconfig=args.kubeconfig, context=args.context, on_retry=lambda m: None,
                          patience=args.api_patience, request_timeout=args.api_timeout)
    except ClusterUnreachable as e:
        return _err(str(e))
    try:
        done = rollback(cluster, plan, out=lambda text: print(text, flush=True), node_timeout=args.node_timeout,
                        restore_adopted=args.adopted == "restore", dry_run=args.dry_run,
                        take_over_stale=args.take_over)
        if done.line:
            print(done.line, flush=True)
        return done.code
    except (Refused, LockHeld) as e:
        return _err(str(e))
    except (ClusterUnreachable, LockLost) as e:
        return _err(str(e))
    except KeyboardInterrupt:
        _err("interrupted; run the same command again to finish the rollback")
        return 130
    except Exception as e:  # noqa: BLE001 - never a traceback
        return _err(f"internal error: {type(e).__name__}: {e}; run the same command again")
    finally:
        cluster.close()
