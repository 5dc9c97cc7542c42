"""The auth-flow checks run at once: wall time against the sum of the checks' own times.

Against a migrated sandbox in its own process (``apply --yes`` first), from this process as
the operator's machine:

- the operator-machine probe set an audit runs (credentials, realm, challenge, pull secret,
  push secret — every hop of every check concurrently under one event loop): its wall time,
  the sum of the checks' times, the slowest check, and the same five checks run one after
  another (the baseline a sequential probe would take);
- the Verify stage with node probes (this machine's checks, the Kaniko-view pod, an nsenter
  ``k3s crictl pull`` pod per node and a pull-test pod per node, all at once): wall time
  against the sum of its parts.

Target: the wall time stays within 1.5× the slowest single check.
"""

from __future__ import annotations

import time

from ._common import Row, SandboxProc, median, table, verdict

NAME = "authflow_concurrency"
RUNS = 5
SANDBOX_ARGS = ["--restart-seconds", "0.3:0.6"]


def _context(sb: SandboxProc, *, node_probes: bool):
    from wizard import plan as plan_mod
    from wizard.cluster import Cluster
    from wizard.credentials import Secret
    from wizard.stages.base import Context
    plan = plan_mod.load(sb.dir / "plan.yaml")
    cluster = Cluster.connect(str(sb.dir / "kubeconfig"), patience=30)
    token = Secret((sb.dir / "token").read_text().strip())
    return Context(plan=plan, cluster=cluster, token=token, audit=True, node_probes=node_probes, node_timeout=30)


def probe_set(sb: SandboxProc) -> dict:
    """One audit's operator-machine checks at once, then each alone."""
    from wizard import authflow
    ctx = _context(sb, node_probes=False)
    try:
        t0 = time.perf_counter()
        flows = authflow.operator_flows(ctx, *authflow.ALL_FLOWS)
        wall = (time.perf_counter() - t0) * 1000
        bad = [n for n, f in flows.items() if f is None or not f.ok]
        if bad:
            raise RuntimeError(f"checks failed on a migrated sandbox: {bad}")
        checks = {n: f.ms for n, f in flows.items()}
        one_by_one = 0.0
        for name in authflow.ALL_FLOWS:  # the sequential baseline: a fresh context per check
            c = _context(sb, node_probes=False)
            c.audit = False
            try:
                t1 = time.perf_counter()
                authflow.operator_flows(c, name)
                one_by_one += (time.perf_counter() - t1) * 1000
            finally:
                c.cluster.close()
        return {"wall": wall, "sum": sum(checks.values()), "slowest": max(checks.values()), "checks": checks,
                "sequential": one_by_one}
    finally:
        ctx.cluster.close()


def verify_stage(sb: SandboxProc) -> dict:
    from wizard.stages import BY_KEY
    ctx = _context(sb, node_probes=True)
    try:
        checks = BY_KEY["verify"].verify(ctx)
        failing = [c.name for c in checks if c.status == "fail"]
        if failing:
            raise RuntimeError(f"Verify failed on a migrated sandbox: {failing}")
        t = ctx.cache.verify_timing
        parts = t["parts_ms"]
        return {"wall": t["wall_ms"], "sum": sum(parts.values()), "slowest": max(parts.values()), "parts": parts,
                "checks": len(checks)}
    finally:
        ctx.cluster.close()


def run() -> list[Row]:
    print(f"== {NAME}: the auth-flow checks at once vs their sum, against a migrated sandbox process, "
          f"{RUNS} runs each")
    with SandboxProc(*SANDBOX_ARGS) as sb:
        applied = sb.run("apply", "--yes", timeout=180)
        if applied.rc != 0:
            raise RuntimeError(f"apply exited {applied.rc}:\n{applied.tail()}")
        probes = [probe_set(sb) for _ in range(RUNS)]
        verifies = [verify_stage(sb) for _ in range(RUNS)]
    rows: list[Row] = []
    lines = []
    for label, runs, unit in (("operator probe set (5 checks)", probes, "check"),
                              ("Verify stage, node probes", verifies, "vantage")):
        wall, total, slowest = (median([r[k] for r in runs]) for k in ("wall", "sum", "slowest"))
        extra = f"{median([r['sequential'] for r in runs]):.0f} ms" if "sequential" in runs[0] else "—"
        lines.append([label, f"{wall:.0f} ms", f"{total:.0f} ms", f"{slowest:.0f} ms", f"{total / wall:.1f}×", extra])
        ok = wall <= 1.5 * slowest
        rows.append(Row(NAME, f"{label}: wall vs sum of {unit}s", f"{wall:.0f} / {total:.0f} ms",
                        "wall ≤ 1.5 × slowest", verdict(ok)))
    print(table(["set", "wall (median)", "sum of checks", "slowest check", "sum/wall", "one after another"], lines))
    last = probes[-1]["checks"]
    print("  checks of the last probe run: " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in last.items()))
    parts = verifies[-1]["parts"]
    print("  vantages of the last Verify run: " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in parts.items()))
    return rows


def main() -> int:
    rows = run()
    print(table(["benchmark", "figure", "value", "target", "verdict"],
                [[r.bench, r.figure, r.value, r.target, r.verdict] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
