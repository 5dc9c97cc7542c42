"""Stage Node registries [Step 5]: registries.yaml on every node, merged, backed up and read back."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from .. import ownership as O
from .. import registries as R
from ..diagnose import BY_KEY
from .base import (
    WARN,
    Change,
    Check,
    Context,
    Observation,
    Stage,
    StageFailed,
    failed,
    passed,
    skipped,
    text_diff,
)
from .nodes import (
    NODE_TLS_FIX,
    SECRET_NAME,
    ca_bundle,
    compare_on_nodes,
    node_exec,
    node_facts,
    remove_node_secret,
    secret_ref,
    unrestartable,
)


@dataclass(frozen=True)
class NodeFactsSeen(Observation):
    """Each node's registries.yaml, k3s unit and containerd facts, from one run of the facts script."""

    facts: dict[str, R.NodeFacts]


class NodeRegistries(Stage):
    key, title, guide_step = "registries", "Node registries", "Step 5"
    node_probes = True
    description = ("containerd runs on each node, outside the cluster, and pulls through K3s's registries.yaml. "
                   "This stage MERGES the registry host, legacy hosts and realm host (TLS trust and credentials) "
                   "into every node's existing file — the guide overwrites it — keeps a timestamped backup, writes "
                   "atomically through a short-lived privileged pod, and reads the file back.")

    def inspect(self, ctx: Context) -> NodeFactsSeen:
        return NodeFactsSeen(node_facts(ctx))

    def _conflict(self, ctx: Context) -> dict | None:
        live = ctx.cluster.get("Secret", SECRET_NAME, ctx.plan.wizard_namespace)
        return live if O.conflict(live, secret_ref(ctx), getattr(ctx.cluster, "adopted", ())) else None

    def conflicts(self, ctx: Context) -> list[Check]:
        from .objects import conflict_check
        live = self._conflict(ctx)
        return [conflict_check(ctx, secret_ref(ctx), live)] if live is not None else []

    def precheck(self, ctx: Context) -> list[Check]:
        """Every node's existing registries.yaml must parse and be maskable, or the wizard cannot merge into it."""
        bad, unmaskable = [], {}
        facts = node_facts(ctx)
        for node, f in facts.items():
            if f.unmaskable:
                unmaskable[node] = f.unmaskable
                continue
            try:
                if f.text is not None:
                    R.layout(f.text, R.PATH)
            except R.Unmergeable as e:
                unmaskable[node] = str(e)
            except R.RegistriesInvalid:
                try:
                    R.parse(f.text, f"{node}:{R.PATH}")
                except R.RegistriesInvalid as e:
                    bad.append(str(e))
        checks = []
        if unmaskable:
            checks.append(failed("existing registries.yaml mergeable", R.by_node(unmaskable), R.UNMASKABLE_FIX))
        if bad:
            checks.append(failed("existing registries.yaml readable", "; ".join(bad),
                                 "fix or remove the file on that node by hand (k3s would not start with it either); "
                                 "nothing was written to the cluster"))
        if (no_systemd := unrestartable(facts)) is not None:
            checks.append(no_systemd)
        return checks

    def plan(self, ctx: Context, observed: NodeFactsSeen) -> list[Change]:
        if ctx.token is None:
            return []
        if (no_systemd := unrestartable(observed.facts)) is not None:  # before anything is written
            raise StageFailed(no_systemd)
        layouts, problems, unmaskable = {}, [], {}
        for node, f in observed.facts.items():
            if f.unmaskable:
                unmaskable[node] = f.unmaskable
                continue
            try:
                R.parse(f.text, f"{node}:{R.PATH}")
                layouts[node] = R.layout(f.text, R.PATH) if f.text is not None else None
            except R.Unmergeable as e:
                unmaskable[node] = str(e)
            except R.RegistriesInvalid as e:
                problems.append(str(e))
        if unmaskable:
            raise StageFailed(failed("existing registries.yaml mergeable", R.by_node(unmaskable), R.UNMASKABLE_FIX))
        if problems:
            raise StageFailed(failed("existing registries.yaml readable", "; ".join(problems),
                                     "fix or remove the file on that node by hand (k3s would not start with it "
                                     "either); nothing was written to any node"))
        # whether the plan's hosts already hold the token: the node compares, nothing of its file is printed
        token_text = R.token_value_text(ctx.token)
        asks = {n: [(line, token_text) for line in R.own_password_lines(lay, ctx.plan).values()]
                for n, lay in layouts.items() if lay is not None}
        same = compare_on_nodes(ctx, {n: a for n, a in asks.items() if a}, stage=self.key)
        changes = []
        bundle = ca_bundle(ctx)
        for node, lay in layouts.items():
            try:
                np = R.plan_node(node, lay, ctx.plan, ctx.token, same.get(node, {}))
            except R.Unmergeable as e:
                raise StageFailed(failed("registries.yaml entry maskable", str(e),
                                         "use a token without line breaks or control characters")) from None
            if bundle is not None and (ca := R.plan_ca(node, observed.facts[node], bundle)) is not None:
                changes.append(Change(f"node {node}:{R.CA_PATH}", "write",
                                      text_diff(ca.before if ca.had_file else None, ca.after,
                                                f"{node}{R.CA_PATH}", *ctx.secrets), ca))
            if np is not None:
                changes.append(Change(f"node {node}:{R.PATH}", "write",
                                      text_diff(np.before if np.had_file else None, np.after, f"{node}{R.PATH}",
                                                *ctx.secrets), np))
        if changes and (live := self._conflict(ctx)) is not None:  # the files travel in that Secret
            from .objects import conflict_change
            changes.insert(0, conflict_change(ctx, secret_ref(ctx), live))
        return changes

    def apply(self, ctx: Context, changes: list[Change]) -> None:
        if not changes:
            return
        for ch in changes:
            if ch.action == "conflict":
                raise StageFailed(ch.payload)
        p = ctx.plan
        ns = p.wizard_namespace
        plans: list[R.NodePlan] = [c.payload for c in changes if isinstance(c.payload, R.NodePlan)]
        cas: dict[str, R.CAPlan] = {c.payload.node: c.payload for c in changes if isinstance(c.payload, R.CAPlan)}
        # only the wizard's own entries (with the token) travel, in a Secret, never in a pod spec; the node's
        # other lines never leave the node
        data = {R.chunk_key(np.node, i): base64.b64encode(chunk.encode()).decode()
                for np in plans for i, chunk in enumerate(np.chunks)}
        data |= {R.ca_key(n): base64.b64encode(ca.text.encode()).decode() for n, ca in cas.items()}
        ctx.cluster.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": SECRET_NAME, "namespace": ns}, "data": data}, self.key)
        try:
            backup, ca_backup = R.backup_path(), R.ca_backup_path()
            by_node = {np.node: np for np in plans}
            ctx.node_backups.update({n: backup for n, np in by_node.items() if np.had_file})
            built = {n: R.write_script(by_node.get(n), backup if n in by_node and by_node[n].had_file else None,
                                       secret=SECRET_NAME, ca=cas.get(n),
                                       ca_backup=ca_backup if n in cas and cas[n].had_file else None)
                     for n in [*by_node, *(n for n in cas if n not in by_node)]}
            for np in plans:  # the way back, recorded before the write (ghcr2gitea rollback)
                ctx.undo("node_file", node=np.node, had_file=np.had_file,
                         backup=backup if np.had_file else None, added=list(np.added),
                         configs_added=np.configs_added)
            for n, ca in cas.items():
                ctx.undo("ca_file", node=n, had_file=ca.had_file, backup=ca_backup if ca.had_file else None,
                         sha256=ca.sha)
            ctx.say(self.key, f"writing registries.yaml on {len(plans)} node(s)"
                    + (f", the CA bundle on {len(cas)}" if cas else ""))
            results = node_exec(ctx).run_many({n: b.text() for n, b in built.items()}, stage=self.key,
                                              purpose="write", env={n: b.env for n, b in built.items()},
                                              timeout=ctx.node_timeout)
            for n, r in results.items():
                if r.ok and n in by_node and (sha := R.written_sha(r.output)):
                    ctx.undo("node_file_written", node=n, sha256=sha)
            bad = {n: r for n, r in results.items() if not r.ok}
            if bad:
                n, r = next(iter(bad.items()))
                if r.exit_code == R.CA_EXIT:
                    raise StageFailed(failed("CA bundle written", f"{n}: {R.CA_MESSAGE} (nothing was written on "
                                             "that node)", "re-run the stage"))
                if r.exit_code == R.CHANGED_EXIT:
                    raise StageFailed(failed("registries.yaml written", f"{n}: {R.CHANGED_MESSAGE} (nothing was "
                                             "written on that node)", "check whether something else manages "
                                             f"{R.PATH}, then run apply again"))
                raise StageFailed(failed("registries.yaml written", f"{n}: write failed (exit {r.exit_code}): "
                                         f"{r.output.strip()[-200:]}", f"check the node's /etc/rancher/k3s; the old "
                                         f"file is kept as {backup}"))
        finally:
            remove_node_secret(ctx.cluster, ns)
        # read back: the masked view must be the expected one, and the node must find the token where it was put
        facts = node_facts(ctx, fresh=True)
        same = compare_on_nodes(ctx, {np.node: list(np.new_checks) for np in plans if np.new_checks},
                                stage=self.key)
        for np in plans:
            got = facts[np.node].text
            if got != np.new_masked or not all(same.get(np.node, {}).get(line) for line, _ in np.new_checks):
                raise StageFailed(failed("registries.yaml read back", f"{np.node}: the file on the node differs from "
                                         "what was written", "re-run the stage; check nothing else manages the file"))
            ctx.say(self.key, f"{np.node}: registries.yaml written and read back", node=np.node, wrote=R.PATH)
        for n, ca in cas.items():
            f = facts[n]
            if not (f.ca_present and f.ca_sha == ca.sha and f.ca_mode == R.CA_MODE):
                raise StageFailed(failed("CA bundle read back", f"{n}: {R.CA_PATH} on the node differs from what was "
                                         f"written (sha256 {f.ca_sha or 'none'}, mode {f.ca_mode or 'none'})",
                                         "re-run the stage; check nothing else manages the file"))
            ctx.say(self.key, f"{n}: {R.CA_PATH} written and read back", node=n, wrote=R.CA_PATH)

    def verify(self, ctx: Context) -> list[Check]:
        checks = []
        if ctx.plan.node_tls != "ca":  # the plan says so: shown with or without node probes
            checks.append(Check("nodes verify the registry's certificate", WARN,
                                "registry.node_tls: skip_verify (the guide's setting): containerd on every node skips "
                                "certificate checks for the registry host, and so for the realm's token requests "
                                "too", NODE_TLS_FIX, {"node_tls": ctx.plan.node_tls, "safer": "registry.node_tls: ca"},
                                gating=False))
        if ctx.audit and not ctx.node_probes:
            return [*checks, skipped("registries.yaml on every node", "reading node files needs probe pods",
                                     "run audit with --node-probes")]
        facts = node_facts(ctx, fresh=not ctx.audit)
        if ctx.plan.node_tls != "ca":
            bundle = None
        else:
            try:
                bundle = ca_bundle(ctx)
            except StageFailed as e:
                checks.append(e.check)
                bundle = None
        want_sha = hashlib.sha256(bundle.encode()).hexdigest() if bundle else None
        for node, f in facts.items():
            if want_sha is not None:
                name = f"{node}: CA bundle"
                if f.ca_present and f.ca_sha == want_sha and f.ca_mode == R.CA_MODE:
                    checks.append(passed(name, {"path": R.CA_PATH, "sha256": want_sha, "mode": R.CA_MODE}))
                else:
                    checks.append(failed(name, f"{R.CA_PATH} " + (
                        f"differs from the bundle (sha256 {f.ca_sha or 'unreadable'}, mode {f.ca_mode or '?'}; want "
                        f"{want_sha[:16]}…, mode {R.CA_MODE})" if f.ca_present else "is missing") + ": containerd "
                        "cannot verify the registry host or the realm", "apply stage Node registries"))
            name = f"{node}: registries.yaml"
            if f.unmaskable:
                checks.append(failed(name, f.unmaskable, R.UNMASKABLE_FIX))
                continue
            try:
                if f.text is not None:
                    R.layout(f.text, R.PATH)
            except R.Unmergeable as e:
                checks.append(failed(name, str(e), R.UNMASKABLE_FIX))
                continue
            except R.RegistriesInvalid:
                pass  # said below
            try:
                data = R.parse(f.text, f"{node}:{R.PATH}")
            except R.RegistriesInvalid as e:
                checks.append(failed(name, str(e), "fix the file by hand; k3s cannot load it"))
                continue
            bad = R.problems(data)
            if bad:
                d = BY_KEY["cluster-dns-on-node"]
                checks.append(failed(name, "; ".join(bad), d.fix))
                continue
            missing = R.configured(data, ctx.plan)
            if f.text is None:
                checks.append(failed(name, "absent", "apply stage Node registries"))
            elif missing:
                checks.append(failed(name, f"no TLS trust or credentials for {', '.join(missing)}",
                                     "apply stage Node registries"))
            else:
                state = "loaded" if f.restart_reason(ctx.plan) is None else "written, k3s not restarted yet"
                checks.append(passed(name, {"hosts": sorted(data.get("configs") or {}), "state": state}))
        return checks
