"""The ``ghcr2gitea`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _restart_range(text: str, name: str = "--restart-seconds") -> tuple[float, float]:
    try:
        lo, _, hi = text.partition(":")
        lo_f = float(lo)
        hi_f = float(hi) if hi else lo_f
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} {text!r}: expected MIN:MAX seconds, e.g. 2:5") from None
    if not (0 <= lo_f <= hi_f < 86400):  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{name} {text!r}: need 0 <= MIN <= MAX, less than a day")
    return lo_f, hi_f


def _timezone(text: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"--node-timezone {text!r}: not a known time zone; use an IANA name "
                                         "such as UTC, Asia/Tokyo or America/Phoenix") from None
    return text


def _rate(text: str) -> float:
    try:
        r = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--api-fault-rate {text!r}: expected a number between 0 and 1") from None
    if not 0 <= r <= 1:
        raise argparse.ArgumentTypeError(f"--api-fault-rate {text!r}: expected a number between 0 and 1")
    return r


def _seconds(name: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r}: expected seconds, e.g. 2") from None
        if not 0 <= v < 3600:
            raise argparse.ArgumentTypeError(f"{name} {text!r}: expected 0 <= seconds < 3600")
        return v
    return parse


def _count(name: str, low: int):
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {text!r}: expected a whole number") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"{name} {text!r}: must be at least {low}")
        return n
    return parse


def _gitea_version(text: str) -> str:
    from sandbox.gitea import parse_version
    try:
        parse_version(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gitea-version {text!r}: expected a version like 1.22.1") from None
    return text.strip()


def _k3s_version(text: str) -> str:
    from wizard import k3sversions
    if k3sversions.parse(text) is None:
        raise argparse.ArgumentTypeError(f"--k3s-version {text!r}: expected a k3s release like v1.29.3+k3s1 "
                                         "(v1.MINOR.PATCH+k3sN)")
    return text.strip()


def add_sandbox_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", choices=("sandbox", "real"), default="sandbox",
                   help="which Kubernetes API server serves the world: the sandbox's own (starts in a second), or a "
                   "real kube-apiserver with etcd and kube-controller-manager, the simulated nodes its node agent "
                   "(built by scripts/build-real; starts in about 20 s; default sandbox)")
    p.add_argument("--servers", type=_count("--servers", 1), default=3, help="K3s server nodes (default 3)")
    p.add_argument("--agents", type=_count("--agents", 0), default=2, help="K3s agent nodes (default 2)")
    p.add_argument("--restart-seconds", type=_restart_range, default=(2.0, 5.0), metavar="MIN:MAX",
                   help="how long a k3s restart takes, random per restart (default 2:5)")
    p.add_argument("--server-restart-seconds", type=lambda t: _restart_range(t, "--server-restart-seconds"),
                   metavar="MIN:MAX", help="how long a server's k3s takes from its start to READY (etcd and the API "
                   "server; its kubelet posts Starting and renews its Lease long before); default: --restart-seconds")
    p.add_argument("--pod-start-seconds", type=lambda t: _restart_range(t, "--pod-start-seconds"), default=None,
                   metavar="MIN:MAX", help="how long a pod takes from its images pulled to its containers running, "
                   "random per pod (a real cluster: about 0.5:1.5; default 0)")
    p.add_argument("--readyz-lag-seconds", type=_seconds("--readyz-lag-seconds"), default=None, metavar="S",
                   help="after the API node's k3s opens its port again, /readyz answers 500 this long (etcd and "
                   "post-start hooks catching up; a real server: about 1; default 0; --api sandbox only)")
    p.add_argument("--log-gap-seconds", type=_seconds("--log-gap-seconds"), default=None, metavar="S",
                   help="while a node's kubelet is down and this long after it starts, pods/log of its pods answers "
                   "500 (k3s's tunnel reconnecting; a real node: about 1; default 0)")
    p.add_argument("--realistic", action="store_true",
                   help="a real cluster's timeline: --pod-start-seconds 0.5:1.5 --readyz-lag-seconds 1 "
                   "--log-gap-seconds 1, and servers --server-restart-seconds 20:30 unless given")
    p.add_argument("--systemd-version", type=_count("--systemd-version", 200), default=252, metavar="N",
                   help="the nodes' systemd version; below 247 `systemctl --timestamp=` is refused (default 252)")
    p.add_argument("--node-timezone", type=_timezone, default="UTC", metavar="TZ",
                   help="the nodes' local time zone, as systemctl, date and stat print it (default UTC)")
    p.add_argument("--k3s-version", type=_k3s_version, default=None, metavar="V",
                   help="the nodes' k3s release; what it generates from registries.yaml follows it: before "
                   "v1.26.13/1.27.10/1.28.6/1.29.1 no certs.d, TLS in config.toml; v1.26.15/1.27.12/1.28.8/1.29.3 a "
                   "hosts.toml containerd ignores (default v1.33.5+k3s1)")
    p.add_argument("--agent-unit-type", choices=("notify", "exec"), default="notify",
                   help="the agents' k3s-agent unit Type: notify (install.sh today: active at READY) or exec (older "
                   "installs: active as soon as the process runs; default notify)")
    p.add_argument("--never-returns", action="append", default=[], metavar="NODE",
                   help="a node whose k3s never comes back after a restart (repeatable)")
    p.add_argument("--openrc", action="append", default=[], metavar="NODE",
                   help="a node that runs OpenRC instead of systemd: no systemctl (repeatable)")
    p.add_argument("--api-fault-rate", type=_rate, default=0.0, metavar="R",
                   help="fraction of API requests answered with 500/503 or a timeout (--api sandbox only)")
    p.add_argument("--existing-registries", metavar="FILE",
                   help="a registries.yaml pre-installed (and loaded) on every node")
    p.add_argument("--seed", type=int, default=1, help="random seed for the simulation (default 1)")
    p.add_argument("--gitea-version", type=_gitea_version, default=None, metavar="V",
                   help="the Gitea version the model behaves as: up to 1.22.0 the realm is ROOT_URL; from 1.22.1 "
                   "it follows the request's Host and X-Forwarded-Proto, from 1.26 always (default 1.22.0)")
    p.add_argument("--gitea", choices=("model", "real"), default="model",
                   help="the world's Gitea: our model, or a real Gitea process built by scripts/build-real gitea "
                   "(its realm pinned to ROOT_URL with PUBLIC_URL_DETECTION=never; default model)")
    p.add_argument("--gitea-preloaded", action=argparse.BooleanOptionalAction, default=None,
                   help="Gitea starts with the plan's images, copied from the sandbox's GHCR (default: no, as on a real "
                   "migration: the Images stage copies them)")


# --realistic: a real cluster's timeline (each still overridable by its own flag). Not the default: the
# default world keeps pods instant, so the restart benchmarks measure the tool, not the simulated pods
REALISTIC = {"pod_start_seconds": (0.5, 1.5), "readyz_lag_seconds": 1.0, "log_gap_seconds": 1.0,
             "server_restart_seconds": (20.0, 30.0)}


def _given(value, realistic: bool, real_value, default=None):
    return value if value is not None else real_value if realistic else default


def sandbox_options(args: argparse.Namespace):
    from sandbox.cluster import Options, node_names
    real = args.realistic
    if args.api == "real":  # faults of the sandbox's own API server: a real one is not ours to break
        for flag, given in (("--api-fault-rate", args.api_fault_rate), ("--readyz-lag-seconds", args.readyz_lag_seconds)):
            if given:
                raise SystemExit(f"ghcr2gitea: {flag} is a fault of the sandbox's own API server: leave it out with "
                                 "--api real")
    names = {n for n, _ in node_names(args.servers, args.agents)}
    for flag, chosen in (("--never-returns", args.never_returns), ("--openrc", args.openrc)):
        for n in chosen:
            if n not in names:
                raise SystemExit(f"ghcr2gitea: {flag} {n!r}: no such node in this topology "
                                 f"(nodes: {', '.join(sorted(names)[:6])}{', …' if len(names) > 6 else ''})")
    existing = None
    if args.existing_registries:
        try:
            existing = Path(args.existing_registries).read_text()
        except OSError as e:
            raise SystemExit(f"ghcr2gitea: --existing-registries {args.existing_registries}: {e.strerror}") from None
    return Options(servers=args.servers, agents=args.agents, restart_seconds=args.restart_seconds,
                   server_restart_seconds=_given(args.server_restart_seconds, real,
                                                 REALISTIC["server_restart_seconds"]),
                   systemd_version=args.systemd_version,
                   pod_start_seconds=_given(args.pod_start_seconds, real, REALISTIC["pod_start_seconds"], (0.0, 0.0)),
                   readyz_lag_seconds=_given(args.readyz_lag_seconds, real and args.api != "real",
                                             REALISTIC["readyz_lag_seconds"], 0.0),
                   log_gap_seconds=_given(args.log_gap_seconds, real, REALISTIC["log_gap_seconds"], 0.0),
                   node_timezone=args.node_timezone,
                   **({} if args.k3s_version is None else {"k3s_version": args.k3s_version}),
                   agent_unit_type=args.agent_unit_type,
                   openrc=set(args.openrc),
                   never_returns=set(args.never_returns), api_fault_rate=args.api_fault_rate,
                   existing_registries=existing, seed=args.seed,
                   **({} if args.gitea_preloaded is None else {"gitea_preloaded": args.gitea_preloaded}),
                   **({} if args.gitea_version is None else {"gitea_version": args.gitea_version}),
                   gitea_real=args.gitea == "real", api=args.api)


def add_cluster_options(p: argparse.ArgumentParser, *, plan_required: bool = True, fleet: bool = False) -> None:
    p.add_argument("--plan", required=plan_required, metavar="FILE", help="the migration plan (YAML)")
    p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: KUBECONFIG, then ~/.kube/config)")
    if fleet:  # audit: several contexts are a fleet audit (wizard/fleet.py)
        p.add_argument("--context", action="append", default=[], metavar="NAME",
                       help="kubeconfig context (default: the plan's cluster.context, else current); repeat it to "
                       "audit several clusters at once into one report")
    else:
        p.add_argument("--context", help="kubeconfig context (default: the plan's cluster.context, else current)")
    p.add_argument("--token-file", metavar="FILE", help="file holding the Gitea token (mode 600); else GITEA_TOKEN")
    p.add_argument("--ghcr-token-file", metavar="FILE", help="file holding a GitHub token with read:packages for the "
                   "Images stage (mode 600); else GHCR_TOKEN; else the old pull secret's ghcr.io entry")
    p.add_argument("--resolve", action="append", default=[], metavar="HOST:PORT:ADDR",
                   help="connect to ADDR for HOST:PORT, like curl --resolve (repeatable)")
    p.add_argument("--api-patience", type=_count("--api-patience", 1), default=120, metavar="SECONDS",
                   help="how long to keep retrying an unreachable or failing API before giving up (default 120)")
    p.add_argument("--api-timeout", type=_count("--api-timeout", 1), default=30, metavar="SECONDS",
                   help="how long one API call may take before it is retried (default 30)")


def _checked(flag: str, check: str):
    """An option checked by wizard.auditcron's ``check`` (ValueError: its message, after the flag's name)."""
    def parse(text: str):
        from wizard import auditcron
        try:
            return getattr(auditcron, check)(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{flag} {e}") from None
    return parse


def _stage_key(text: str) -> str:
    from wizard.stages import stage_named
    try:
        return stage_named(text).key
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _adopt(text: str):
    from wizard.ownership import parse_ref
    try:
        return parse_ref(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--adopt ")) from None


def add_adopt_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adopt", action="append", type=_adopt, default=[], metavar="KIND/NAMESPACE/NAME",
                   help="let the wizard change an existing object it does not own (it is labelled as the wizard's "
                        "from then on; recorded in the journal); cluster-scoped kinds: KIND/NAME (repeatable)")


class _Parser(argparse.ArgumentParser):
    """No abbreviated options, and an unknown option is named before any missing required one
    (argparse said `required: --plan` for a mistyped `--plna`)."""

    def __init__(self, *args, **kw):
        kw.setdefault("allow_abbrev", False)
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kw)

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        subs = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})
        for tok in args:
            if tok == "--" or tok in subs:
                break  # the rest is the subcommand's to judge
            if tok.startswith("--") and tok.split("=", 1)[0] not in self._option_string_actions:
                self.error(f"unrecognized argument: {tok}")
        return super().parse_known_args(args, namespace)


# each subcommand's help ends with its exit codes (docs/usage.md has the tables)
EXIT_CODES = {
    "plan": "0 nothing to change, 3 changes pending, 2 error, 130 interrupted",
    "apply": "0 applied and every check passes, 1 a stage or precheck failed, 2 could not start or go on, "
             "130 interrupted",
    "audit": "0 no check failed, 1 findings, 2 could not check (or --result-configmap not written); on a terminal (or --tui) it opens the read-only "
             "wizard: 130 when quit while it ran",
    "init": "0 written, 2 error",
    "rewrite": "0 nothing to change (or --write wrote it), 3 changes pending, 2 error",
    "export": "0 written, 2 error",
    "rotate-token": "0 rotated and proven (the old token may be revoked), 1 a stage failed (the old token is still "
                    "needed), 2 could not start, 130 interrupted",
    "rollback": "0 rolled back and proven, 1 a stage failed (run it again once fixed: it continues), 2 could not "
                "start (no journal of a migration, or no --yes), 130 interrupted",
    "demo": "0 quit, 130 quit while something was applied (the line printed says how to resume), "
            "2 the folder's kept world cannot be loaded (other options: --fresh), non-zero for a bad option",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ghcr2gitea", description="Migrate a K3s cluster from GHCR to Gitea's "
                                     "container registry, proving every step.")
    # no COMMAND: the wizard (TUI) on the current kubeconfig context
    parser.add_argument("--plan", dest="tui_plan", metavar="FILE", help="the migration plan (make one with "
                        "`ghcr2gitea init`)")
    parser.add_argument("--kubeconfig", dest="tui_kubeconfig", metavar="FILE",
                        help="kubeconfig (default: KUBECONFIG, then ~/.kube/config)")
    parser.add_argument("--context", dest="tui_context", help="kubeconfig context (default: the plan's, else current)")
    parser.add_argument("--token-file", dest="tui_token_file", metavar="FILE",
                        help="file holding the Gitea token (mode 600); else GITEA_TOKEN, else asked")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("sandbox", help="serve a simulated K3s cluster with Gitea on loopback")
    p.add_argument("--dir", required=True, help="folder for kubeconfig, plan.yaml, token, ca.crt, resolve")
    add_sandbox_options(p)
    p = sub.add_parser("plan", help="print every stage's pending changes (exit 0 none, 3 pending, 2 error)")
    add_cluster_options(p)
    add_adopt_option(p)
    p = sub.add_parser("apply", help="run the stages in order, stopping at the first failed check")
    add_cluster_options(p)
    add_adopt_option(p)
    p.add_argument("--yes", action="store_true", help="apply without asking (required when not on a terminal)")
    p.add_argument("--dry-run", action="store_true", help="print what would change and the restart order; change nothing")
    p.add_argument("--node-timeout", type=_count("--node-timeout", 1), default=180, metavar="SECONDS",
                   help="how long a restarting node may take to be proven back (default 180)")
    p.add_argument("--max-unavailable", type=_count("--max-unavailable", 1), default=1, metavar="N",
                   help="agents restarted at once (servers are always one at a time; default 1)")
    p.add_argument("--take-over-stale-lock", action="store_true",
                   help="take the cluster lock from a run that stopped renewing it")
    p.add_argument("--override", action="append", default=[], type=_stage_key, metavar="STAGE",
                   help="pass over stage STAGE (its key or its title, any case: images, \"HTTPS ingress\"): its "
                        "changes are not applied and its failed checks do not stop the run; recorded in the journal "
                        "(repeatable)")
    p = sub.add_parser("rotate-token", help="put a new Gitea token in every Secret and on every node, proven")
    add_cluster_options(p)
    p.add_argument("--new-token-file", required=True, metavar="FILE",
                   help="file holding the new Gitea token (mode 600); the old one is read from the push secret")
    p.add_argument("--yes", action="store_true", help="confirm: every node's registries.yaml changes, k3s restarts")
    p.add_argument("--node-timeout", type=_count("--node-timeout", 1), default=180, metavar="SECONDS",
                   help="how long a restarting node may take to be proven back (default 180)")
    p = sub.add_parser("rollback", help="take the migration back: workloads, node files and the wizard's objects "
                       "as they were, proven")
    add_cluster_options(p)
    p.add_argument("--yes", action="store_true", help="confirm: every node's registries.yaml changes, k3s restarts")
    p.add_argument("--dry-run", action="store_true", help="print the plan of the rollback; change nothing")
    p.add_argument("--adopted", choices=("leave", "restore"), default="leave",
                   help="objects the migration adopted: leave them as they are (default) or give them back the "
                        "fields recorded before (not a Secret's data, which is never recorded)")
    p.add_argument("--node-timeout", type=_count("--node-timeout", 1), default=180, metavar="SECONDS",
                   help="how long a restarting node may take to be proven back (default 180)")
    p.add_argument("--take-over-stale-lock", dest="take_over", action="store_true",
                   help="take the cluster lock from a run that stopped renewing it")
    p = sub.add_parser("audit", help="inspect and verify every stage without changing anything")
    add_cluster_options(p, plan_required=False, fleet=True)
    p.add_argument("--all-contexts", action="store_true",
                   help="audit every context of the kubeconfig at once (a fleet audit)")
    p.add_argument("--plan-dir", metavar="DIR", help="a fleet audit's plans: DIR/<context>.yaml for each context")
    p.add_argument("--format", choices=("text", "json", "markdown"), default=None,
                   help="headless report (default: the wizard in audit mode on a terminal, else text)")
    p.add_argument("--tui", action="store_true", help="open the wizard in audit mode (read-only)")
    p.add_argument("--node-probes", action="store_true",
                   help="allow short-lived read-only probe pods for node facts (creates and deletes pods)")
    p.add_argument("--result-configmap", type=_checked("--result-configmap", "parse_configmap_ref"), default=None,
                   metavar="NAMESPACE/NAME", help="with --format json: also write the report and exit code into this "
                   "ConfigMap (it must exist and be the wizard's; its only write), as the in-cluster audit does")
    p = sub.add_parser("init", help="write a starting plan discovered from the current cluster")
    p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: KUBECONFIG, then ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: current)")
    p.add_argument("--out", metavar="FILE", help="write the plan here (refuses to overwrite) instead of stdout")
    p = sub.add_parser("rewrite", help="show the image and pull-secret edits of manifest files as diffs (exit 0 none, "
                       "3 pending, 2 error); --write makes them, keeping comments and formatting")
    p.add_argument("--plan", required=True, metavar="FILE", help="the migration plan (YAML)")
    p.add_argument("--write", action="store_true", help="write the files (atomically, mode kept) after the diffs")
    p.add_argument("paths", nargs="+", metavar="PATH", help="manifest files, or folders searched for *.yaml/*.yml")
    p = sub.add_parser("export", help="write every object, node registries.yaml and the CI workflow to a folder, "
                       "for GitOps (Flux, Argo CD); Secrets as templates")
    add_cluster_options(p)
    p.add_argument("--dir", required=True, metavar="OUT", help="the folder to write (created if missing)")
    p.add_argument("--force", action="store_true", help="write into a folder that is not empty (the export's files "
                   "are replaced, others kept)")
    p.add_argument("--audit-cronjob", action="store_true",
                   help="instead: write the in-cluster audit (a CronJob running `audit --format json` on a schedule, "
                   "its ServiceAccount, read-only RBAC and result ConfigMap) to OUT/audit-cronjob.yaml")
    p.add_argument("--audit-schedule", type=_checked("--audit-schedule", "check_schedule"), default=None,
                   metavar="CRON", help="with --audit-cronjob: when it runs, five cron fields or @hourly/@daily/… "
                   "(default '17 * * * *': hourly)")
    p.add_argument("--audit-timezone", type=_checked("--audit-timezone", "check_timezone"), default=None,
                   metavar="TZ", help="with --audit-cronjob: the IANA time zone the schedule is read in, e.g. "
                   "Europe/Berlin (the CronJob's spec.timeZone; default: the kube-controller-manager's zone)")
    p.add_argument("--audit-namespace", type=_checked("--audit-namespace", "check_namespace"), default=None,
                   metavar="NS", help="with --audit-cronjob: the namespace of the CronJob and its result ConfigMap "
                   "(default ghcr2gitea-audit, created by the export; another must exist)")
    p.add_argument("--audit-image", type=_checked("--audit-image", "check_image"), default=None, metavar="IMAGE",
                   help="with --audit-cronjob (required): an image with ghcr2gitea installed, e.g. "
                   "registry.example.com/tools/ghcr2gitea:0.1")
    p = sub.add_parser("demo", help="open the wizard on an embedded sandbox")
    add_sandbox_options(p)
    p.add_argument("--dir", help="the demo's folder: its sandbox's world (kept across runs, so the demo can be "
                   "resumed), journal and report exports (default: $XDG_STATE_HOME/ghcr2gitea/demo)")
    p.add_argument("--fresh", action="store_true",
                   help="start a new demo world: wipe the folder's kept world and journal first (report exports stay)")
    from wizard.images.command import add_parser as add_images_parser
    add_images_parser(sub)
    for name, sub_parser in sub.choices.items():
        helps = {a.dest: a.help for a in sub._choices_actions}
        sub_parser.description = (helps.get(name) or "").rstrip(".") + "." if helps.get(name) else None
        if name in EXIT_CODES:
            sub_parser.epilog = f"exit codes: {EXIT_CODES[name]}"
    parser.epilog = ("without a COMMAND: the wizard (exit 0 quit, 130 quit while something was applied — the line "
                     "printed says how to resume, 2 error)")
    return parser


def _audit_cronjob_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from wizard.auditcron import DEFAULT_NAMESPACE, DEFAULT_SCHEDULE
    given = [f for f, v in (("--audit-schedule", args.audit_schedule), ("--audit-namespace", args.audit_namespace),
                            ("--audit-timezone", args.audit_timezone), ("--audit-image", args.audit_image))
             if v is not None]
    if not args.audit_cronjob:
        if given:
            parser.error(f"{given[0]} is an option of --audit-cronjob: add --audit-cronjob, or leave it out")
        return
    if args.audit_image is None:
        parser.error("--audit-cronjob needs --audit-image IMAGE: an image with ghcr2gitea installed (the CronJob "
                     "runs `ghcr2gitea audit` in it)")
    args.audit_schedule = args.audit_schedule or DEFAULT_SCHEDULE
    args.audit_namespace = args.audit_namespace or DEFAULT_NAMESPACE


def _wizard(args, *, audit: bool = False) -> int:
    """The composition root of the wizard: the engine's side builds the session (wizard.boot), the UI gets it."""
    from wizard.boot import wizard_start
    start = wizard_start(args, audit=audit)
    if isinstance(start, int):
        return start
    from screens.app import run_app
    return run_app(start)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sandbox":
        from sandbox.server import serve
        return serve(args.dir, sandbox_options(args))
    if args.command == "audit":
        fleet = args.all_contexts or len(args.context) > 1 or bool(args.plan_dir)
        if args.result_configmap and (args.format != "json" or args.tui or fleet):
            parser.error("--result-configmap writes one cluster's JSON report: use it with --format json, one "
                         "--context (no --tui)")
        if fleet:
            if args.tui:
                parser.error("--tui audits one cluster: give one --context (a fleet audit is headless)")
            from wizard.fleet import run_fleet
            args.format = args.format or "text"
            return run_fleet(args)
        if not args.plan:
            parser.error("audit: the following arguments are required: --plan (or --plan-dir for a fleet audit)")
        args.context = args.context[0] if args.context else None
    if args.command == "audit" and (args.tui or (args.format is None and sys.stdout.isatty())):
        return _wizard(args, audit=True)
    if args.command == "audit" and args.format is None:
        args.format = "text"
    if args.command in ("plan", "apply", "audit"):
        from wizard.commands import run_command
        return run_command(args)
    if args.command == "init":
        from wizard.commands import run_init
        return run_init(args)
    if args.command == "rewrite":
        from wizard.commands import run_rewrite
        return run_rewrite(args)
    if args.command == "export":
        _audit_cronjob_options(parser, args)
        from wizard.commands import run_export
        return run_export(args)
    if args.command == "images":
        return args.run(args)
    if args.command == "rollback":
        from wizard.rollback import run_rollback
        return run_rollback(args)
    if args.command == "rotate-token":
        from wizard.rotate import run_rotate
        return run_rotate(args)
    if args.command == "demo":
        from screens.demo import run_demo
        return run_demo(args.dir, sandbox_options(args), fresh=args.fresh)
    if args.command is None:
        return _wizard(argparse.Namespace(plan=args.tui_plan, kubeconfig=args.tui_kubeconfig,
                                      context=args.tui_context, token_file=args.tui_token_file))
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
