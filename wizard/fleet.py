"""The fleet audit: one read-only audit per kubeconfig context, run at once, in one report.

``ghcr2gitea audit --plan F --context A --context B …`` (or ``--all-contexts``; ``--plan-dir D`` takes
``D/<context>.yaml`` per cluster) audits each cluster exactly as a single ``audit`` does — its own
connection, zero mutating requests — concurrently, so the wall time is close to the slowest cluster's.
The JSON report is ``{"clusters": {"A": <the single audit's object>, …}}``; a cluster that cannot be
reached is an entry with ``"error"``, never a crash. The exit code is the worst of the clusters (0/1/2).
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import plan as plan_mod
from .credentials import CredentialError, mask, run_tokens
from .engine import Runner, audit_exit_code
from .kube import ClusterUnreachable
from .run import connect, load_plan
from .stages.base import Context


class FleetError(Exception):
    """The fleet cannot be audited at all (no contexts, no plan): one line, exit 2."""


@dataclass
class ClusterAudit:
    context: str
    code: int  # 0 no check failed, 1 findings, 2 could not check
    doc: dict = field(default_factory=dict)  # the single audit's JSON object, or {"cluster":…, "error": …}
    unreachable: bool = False  # the API could not be reached (not: its plan is invalid, an internal error)

    @property
    def stages(self) -> dict[str, str]:
        return {s["key"]: s["status"] for s in self.doc.get("stages", [])}


def kubeconfig_contexts(kubeconfig: str | None) -> list[str]:
    from kubernetes import config
    try:
        contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError) as e:
        raise FleetError(f"--all-contexts: cannot read the kubeconfig: {e}") from None
    return sorted(c["name"] for c in contexts or [])


def plan_for(context: str, args) -> str:
    if args.plan_dir:
        path = Path(args.plan_dir) / f"{context}.yaml"
        if not path.is_file():
            raise FleetError(f"--plan-dir {args.plan_dir}: no {context}.yaml for context {context!r} "
                             "(one plan per context name)")
        return str(path)
    return args.plan


def audit_one(context: str, plan_path: str, args, token) -> ClusterAudit:
    """The single audit against one context; every failure is this cluster's finding, not the fleet's."""
    try:
        plan = load_plan(plan_path, tuple(args.resolve or ()))
    except plan_mod.PlanError as e:
        return _unchecked(context, "; ".join(e.problems))
    cluster = None
    try:
        cluster = connect(plan, kubeconfig=args.kubeconfig, context=context, audit=True,
                          node_probes=args.node_probes, on_retry=lambda m: None,
                          patience=args.api_patience, request_timeout=args.api_timeout)
        ctx = Context(plan=plan, cluster=cluster, token=token, audit=True, node_probes=args.node_probes)
        cluster.version()
        runner = Runner(ctx, lambda text: None)
        results = runner.audit()
        info = {"server": cluster.server, "context": context, "version": cluster.server_version()}
        doc = {"cluster": info, "stages": [r.to_dict() for r in results]}
        return ClusterAudit(context, 2 if runner.could_not_check else audit_exit_code(results), doc)
    except ClusterUnreachable as e:
        return _unchecked(context, str(e), unreachable=True)
    except Exception as e:  # noqa: BLE001 - one cluster's surprise is its finding; the fleet report goes on
        return _unchecked(context, f"internal error: {type(e).__name__}: {e}")
    finally:
        if cluster is not None:
            cluster.close()


def _unchecked(context: str, message: str, *, unreachable: bool = False) -> ClusterAudit:
    return ClusterAudit(context, 2, {"cluster": {"context": context}, "stages": [], "error": message},
                        unreachable=unreachable)


def run_fleet(args) -> int:
    try:
        contexts = kubeconfig_contexts(args.kubeconfig) if args.all_contexts else list(dict.fromkeys(args.context))
        if not contexts:
            raise FleetError("no context to audit: the kubeconfig has none")
        if not args.plan and not args.plan_dir:
            raise FleetError("a fleet audit needs --plan FILE (one plan for all) or --plan-dir DIR (DIR/<context>.yaml)")
        plans = {c: plan_for(c, args) for c in contexts}
    except FleetError as e:
        print(f"ghcr2gitea: {e}", file=sys.stderr)
        return 2
    try:  # an audit: without --token-file and GITEA_TOKEN it reads what it can without one
        token, _ = run_tokens(args.token_file, None, audit=True, prompt=None)
    except CredentialError as e:
        print(f"ghcr2gitea: {e}", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max_workers=min(8, len(contexts)), thread_name_prefix="audit") as pool:
        audits = list(pool.map(lambda c: audit_one(c, plans[c], args, token), contexts))
    sys.stdout.write(mask(render(audits, args.format), token))
    sys.stdout.flush()
    return max(a.code for a in audits)


VERDICT = {0: "ok", 1: "findings", 2: "could not check"}
WIDTH = 120  # the text table fits a 120-column terminal for the 11 stages and cluster names up to 13 characters


def render(audits: list[ClusterAudit], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"clusters": {a.context: a.doc for a in audits}}, indent=2, default=str) + "\n"
    keys: list[str] = []
    titles: dict[str, str] = {}
    for a in audits:
        for s in a.doc.get("stages", []):
            if s["key"] not in titles:
                keys.append(s["key"])
                titles[s["key"]] = s.get("name", s["key"])
    if fmt == "markdown":
        lines = ["# ghcr2gitea fleet audit", "", "| Cluster | Result | " + " | ".join(titles[k] for k in keys) + " |",
                 "|---|---|" + "---|" * len(keys)]
        for a in audits:
            cells = [a.stages.get(k, "—") for k in keys]
            lines.append(f"| {a.context} | {VERDICT[a.code]} | " + " | ".join(cells) + " |")
        for a in audits:
            if a.doc.get("error"):
                lines += ["", f"**{a.context}** could not be checked: {a.doc['error'].replace('|', '/')}"]
        return "\n".join(lines) + "\n"
    return render_table(audits, keys)


def render_table(audits: list[ClusterAudit], keys: list[str]) -> str:
    """The text report: a row per cluster, a column per stage (its key as header, its status as cell), the exit
    code of each cluster; an unchecked cluster's row says why in one word and its error follows the table."""
    header = ["cluster", "exit", *keys]
    rows = []
    for a in audits:
        if a.doc.get("error"):
            rows.append([a.context, str(a.code), "unreachable" if a.unreachable else "not checked"])
        else:
            rows.append([a.context, str(a.code), *(a.stages.get(k, "-") for k in keys)])
    widths = [len(h) for h in header]
    for row in rows:  # an unchecked cluster's last cell spans the stage columns: it sets no width
        for i, cell in enumerate(row if len(row) == len(header) else row[:-1]):
            widths[i] = max(widths[i], len(cell))
    sep = "  " if sum(widths) + 2 * (len(widths) - 1) <= WIDTH else " "

    def line(cells: list[str]) -> str:
        return sep.join([*(c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)), cells[-1]])

    worst = max(a.code for a in audits)
    lines = [f"fleet audit of {len(audits)} clusters", line(header), *(line(r) for r in rows)]
    errors = [f"{a.context}: {a.doc['error']}" for a in audits if a.doc.get("error")]
    if errors:
        lines += ["", *errors]
    lines += ["", f"exit {worst}: the worst of the clusters (0 ok, 1 findings, 2 could not check)",
              "a cluster's causes and fixes: ghcr2gitea audit --plan F --context NAME"]
    return "\n".join(lines) + "\n"
