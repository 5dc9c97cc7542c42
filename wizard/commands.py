"""The headless commands behind the CLI: plan, apply, audit."""

from __future__ import annotations

import json
import sys

from . import plan as plan_mod
from .cluster import ClusterReader
from .credentials import CredentialError, mask, run_tokens
from .engine import Runner, audit_exit_code, render_audit
from .kube import ClusterUnreachable
from .lock import LockHeld, LockLost
from .run import Run, connect, load_plan
from .stages.base import Context

_ERRORS: list[str] = []  # what _err said during this command (an audit report carries them when it cannot check)


def _err(msg: str) -> None:
    _ERRORS.append(msg)
    print(f"ghcr2gitea: {msg}", file=sys.stderr, flush=True)


def _say(text: str) -> None:
    print(text, flush=True)


def run_command(args) -> int:
    """plan / apply / audit. An audit asked for JSON or Markdown always prints a report of that format on stdout,
    even when it could not check anything (exit 2): machines reading it never get half a document."""
    _ERRORS.clear()
    wrote = [False]
    if args.command == "audit" and args.format in ("json", "markdown"):
        args._report_written = wrote
    code = _run_command(args)
    if args.command == "audit" and args.format in ("json", "markdown") and not wrote[0]:
        sys.stdout.write(render_audit_error(_ERRORS[-1] if _ERRORS else "could not check", args.format))
        sys.stdout.flush()
    return code


def render_audit_error(message: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"cluster": {}, "stages": [], "error": message}, indent=2) + "\n"
    return f"# ghcr2gitea audit\n\nCould not check: {message.replace('|', '/')}\n"


def _run_command(args) -> int:
    plan = plan_or_report(args.plan, args.resolve)
    if plan is None:
        return 2
    try:
        token, ghcr_token = run_tokens(args.token_file, getattr(args, "ghcr_token_file", None),
                                       audit=args.command == "audit", prompt=None)
    except CredentialError as e:
        _err(str(e))
        return 2
    try:
        cluster = connect(plan, kubeconfig=args.kubeconfig, context=args.context, audit=args.command == "audit",
                          node_probes=getattr(args, "node_probes", False), on_retry=lambda m: None,
                          patience=args.api_patience, request_timeout=args.api_timeout)
    except ClusterUnreachable as e:
        _err(str(e))
        return 2
    cluster.adopted.update(getattr(args, "adopt", None) or ())
    retries: list[str] = []
    # notices go to stderr: stdout is the report (audit --format json/markdown) and must stay parseable
    cluster.on_retry = lambda m: (retries.append(m), _err(f"note: {m}") if len(retries) % 10 == 0 else None)
    ctx = Context(plan=plan, cluster=cluster, token=token, ghcr_token=ghcr_token, audit=args.command == "audit",
                  node_probes=getattr(args, "node_probes", False),
                  node_timeout=float(getattr(args, "node_timeout", 180)),
                  max_unavailable=getattr(args, "max_unavailable", 1),
                  dry_run=getattr(args, "dry_run", False))
    try:
        try:
            cluster.version()
        except ClusterUnreachable as e:
            _err(str(e))
            return 2
        if args.command == "audit":
            return _audit(ctx, args, token)
        if args.command == "plan":
            code, results = Runner(ctx, _say).plan()
            return 2 if any(r.error for r in results) else code
        if not args.yes and not args.dry_run:
            if not sys.stdin.isatty():
                _err("apply changes the cluster: pass --yes to confirm (or --dry-run to see what it would do)")
                return 2
            if input("Apply the migration to this cluster? [y/N] ").strip().lower() not in ("y", "yes"):
                return 2
        if args.dry_run:
            return Runner(ctx, _say).apply(dry_run=True, overrides=set(getattr(args, "override", None) or ()))
        run = Run(ctx, take_over_stale=args.take_over_stale_lock)
        runner = Runner(ctx, _say, run=run)
        try:
            try:
                run.begin(resume_unfinished=True)
            except LockHeld as e:
                _err(str(e))
                return 2
            return runner.apply(overrides=set(getattr(args, "override", None) or ()))
        finally:
            run.close()
    except ClusterUnreachable as e:
        _err(mask(str(e), token))
        return 2
    except LockLost as e:
        _err(str(e))
        return 2
    except KeyboardInterrupt:
        _err("interrupted; run the same command again to continue from where the cluster is")
        return 130
    except Exception as e:  # noqa: BLE001 - never a traceback (it could carry a secret); say what and stop
        _err(mask(f"internal error: {type(e).__name__}: {e}; the run stopped and can be resumed by running the "
                  "same command again", token))
        return 2
    finally:
        cluster.close()


def _audit(ctx: Context, args, token) -> int:
    runner = Runner(ctx, lambda text: None)
    try:
        results = runner.audit()
    except ClusterUnreachable as e:
        _err(str(e))
        return 2
    info = {"server": ctx.cluster.server, "context": args.context or ctx.plan.context,
            "version": ctx.cluster.server_version()}
    report = render_audit(results, info, args.format, secrets=(token,))
    sys.stdout.write(report)
    sys.stdout.flush()
    if getattr(args, "_report_written", None) is not None:
        args._report_written[0] = True
    code = 2 if runner.could_not_check else audit_exit_code(results)
    if getattr(args, "result_configmap", None):
        return _write_result(ctx, args.result_configmap, report, code)
    return code


def _write_result(ctx: Context, ref: tuple[str, str], report: str, code: int) -> int:
    """audit --result-configmap: the JSON report into the named ConfigMap (its one write); the exit code stays
    the audit's, or 2 when the result could not be written."""
    from .auditcron import Result, ResultNotWritten, ResultWriter
    writer = ResultWriter(ctx.cluster.api, *ref, patience=ctx.cluster.patience,
                          request_timeout=ctx.cluster.request_timeout)
    try:
        writer.write(Result(report, code))
    except (ResultNotWritten, ClusterUnreachable) as e:
        _err(str(e))
        return 2
    return code


def run_init(args) -> int:
    from . import init
    try:
        cluster = ClusterReader.connect(args.kubeconfig, args.context, patience=20)
        found = init.discover(cluster)
        text = init.render(found, context=args.context)
    except ClusterUnreachable as e:
        _err(str(e))
        return 2
    for line in found["skipped"]:  # cluster data that is not a valid plan value: left out, said once each
        _err(line)
    if not args.out:
        sys.stdout.write(text)
        return 0
    import os
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        _err(f"--out {args.out}: file exists; choose another name or remove it first")
        return 2
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"wrote {args.out}; check the CHANGE-ME values, then: ghcr2gitea plan --plan {args.out}")
    return 0


def plan_or_report(path: str, resolve=()) -> plan_mod.Plan | None:
    """The plan (with ``--resolve`` entries), or None after saying each problem on stderr in one line."""
    try:
        return load_plan(path, tuple(resolve or ()))
    except plan_mod.PlanError as e:
        for line in e.problems:
            _err(line)
        return None


def run_rewrite(args) -> int:
    """Diffs on stdout (a pipe gets only the diffs); notes and the summary on stderr. 0 none, 3 pending, 2 error."""
    from . import manifests as M
    plan = plan_or_report(args.plan)
    if plan is None:
        return 2
    scan = M.scan(args.paths, plan)
    for rw in scan.changed:
        print(rw.diff(), flush=True)
    for rw in scan.rewrites:
        for line in rw.notes_text():
            _err(f"note: {line}")
    for e in scan.errors:
        _err(str(e))
    if scan.errors:
        _err(f"{len(scan.errors)} file(s) refused: nothing written; fix them and run again")
        return 2
    if not scan.rewrites:
        _err(f"no *.yaml or *.yml file in {' '.join(args.paths)}")
        return 2
    changed = scan.changed
    edits = sum(len(rw.edits) for rw in changed)
    if not changed:
        _err(f"{len(scan.rewrites)} file(s) checked: nothing to change")
        return 0
    if not args.write:
        _err(f"{len(changed)} of {len(scan.rewrites)} file(s) would change ({edits} edit(s)); run again with "
             "--write to write them")
        return 3
    from .fsutil import UnsafeWrite, check_write
    refused = []
    for rw in changed:  # every file is checked before the first is written: nothing half-done
        try:
            check_write(rw.path, within=rw.root)
        except UnsafeWrite as e:
            refused.append(str(e))
    if refused:
        for line in refused:
            _err(line)
        _err(f"{len(refused)} file(s) refused: nothing written")
        return 2
    for rw in changed:
        try:
            rw.write()
        except (M.ManifestError, OSError) as e:
            _err(f"{e}; files before it were written, the rest were not")
            return 2
    _err(f"wrote {len(changed)} file(s) ({edits} edit(s)); comments and formatting kept")
    return 0


def run_export(args) -> int:
    """Every object the wizard would apply, node files and the workflow, written to --dir (read-only on the cluster)."""
    from pathlib import Path

    from . import export as X
    from . import workflow as W
    from .cluster import ApiError
    from .credentials import Secret
    from .stages.base import StageFailed
    from .stages.preflight import discover_nodes
    plan = plan_or_report(args.plan)
    if plan is None:
        return 2
    out = Path(args.dir)
    if out.exists() and not out.is_dir():
        _err(f"--dir {out}: exists and is not a folder")
        return 2
    if out.is_dir() and any(out.iterdir()) and not getattr(args, "force", False):
        _err(f"--dir {out}: the folder is not empty; choose an empty or new folder, or pass --force to write "
             "over the files the export writes (others are kept)")
        return 2
    if getattr(args, "audit_cronjob", False):
        return _export_audit_cronjob(args, plan, out)
    try:
        cluster = ClusterReader.connect(args.kubeconfig, args.context or plan.context, on_retry=lambda m: None,
                                        patience=args.api_patience)
    except ClusterUnreachable as e:
        _err(str(e))
        return 2
    # The token never enters the export: the stages see a placeholder and every Secret becomes a template.
    ctx = Context(plan=plan, cluster=cluster, token=Secret(X.PLACEHOLDER), audit=True)
    try:
        nodes = [n.name for n in discover_nodes(ctx)]
        files = X.build(ctx, W.plan_label(plan, out.resolve()), nodes)
    except ClusterUnreachable as e:
        _err(str(e))
        return 2
    except StageFailed as e:
        _err(f"{e.check.name}: {e.check.cause}; fix: {e.check.fix}")
        return 2
    except ApiError as e:
        _err(f"cluster API: {e}")
        return 2
    finally:
        cluster.close()
    try:
        X.write(out, files)
    except OSError as e:
        _err(f"--dir {out}: {e.strerror or e}")
        return 2
    for f in files:
        _say(f"wrote {out / f.path}  ({f.what})")
    templates = sum(f.what.endswith("(template)") for f in files)
    _say(f"{len(files)} file(s) in {out}; {templates} template(s) to fill first (see {out / 'README.md'}), then "
         f"kubectl apply --server-side -R -f {out}, or commit the folder")
    return 0


def _export_audit_cronjob(args, plan: plan_mod.Plan, out) -> int:
    """export --audit-cronjob: the in-cluster audit's objects, from the plan alone (no cluster is read)."""
    from . import auditcron as A
    from . import export as X
    try:
        objs = A.build(plan, namespace=args.audit_namespace, schedule=args.audit_schedule, image=args.audit_image,
                       timezone=args.audit_timezone)
    except OSError as e:  # a CA file the plan names vanished since the plan was checked
        _err(f"the plan's CA file {e.filename}: {e.strerror}")
        return 2
    files = [X.ExportFile(A.FILE, A.render(objs), f"{len(objs)} objects of the in-cluster audit")]
    try:
        X.write(out, files)
    except OSError as e:
        _err(f"--dir {out}: {e.strerror or e}")
        return 2
    for o in objs:
        md = o["metadata"]
        _say(f"  {o['kind']} {md.get('namespace') + '/' if md.get('namespace') else ''}{md['name']}")
    _say(f"wrote {out / A.FILE}  ({len(objs)} objects); apply it with: kubectl apply --server-side -f "
         f"{out / A.FILE}; the result: kubectl -n {args.audit_namespace} get configmap {A.RESULT} "
         "-o jsonpath='{.data.audit\\.json}'")
    return 0
