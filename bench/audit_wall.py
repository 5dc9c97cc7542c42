"""``ghcr2gitea audit --format json``: wall time and the API requests it makes.

Against a sandbox in its own process, fresh and then migrated (``apply --yes`` first). Each
audit's requests are the entries ``/_sandbox/state`` adds to ``requests`` while it runs (the
state endpoint itself is not recorded). An audit must make zero mutating requests
(POST/PUT/PATCH/DELETE). Baseline: a fresh interpreter importing the modules an audit loads —
the fixed cost any ``ghcr2gitea`` invocation pays before its first request.
"""

from __future__ import annotations

import json
from collections import Counter

from ._common import MUTATING, Row, SandboxProc, median, run_python, table, verdict

NAME = "audit_wall"
RUNS = 3
SANDBOX_ARGS = ["--restart-seconds", "0.3:0.6"]  # only the apply in between restarts nodes; keep it short


def audit_once(sb: SandboxProc) -> dict:
    before = len(sb.state()["requests"])
    res = sb.run("audit", "--format", "json", timeout=120)
    reqs = sb.state()["requests"][before:]
    try:
        report = json.loads(res.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"audit printed no JSON (exit {res.rc}):\n{res.tail()}") from None
    statuses = Counter(s["status"] for s in report["stages"])
    return {"wall": res.wall, "rc": res.rc, "requests": len(reqs),
            "mutating": [f"{r['method']} {r['path']}" for r in reqs if r["method"] in MUTATING],
            "methods": Counter(r["method"] for r in reqs), "stages": statuses}


def run() -> list[Row]:
    print(f"== {NAME}: `ghcr2gitea audit --format json` against a sandbox process, {RUNS} runs per state")
    bases = []
    for _ in range(RUNS):
        b = run_python("import wizard.commands, wizard.stages, wizard.cluster")
        if b.rc != 0:
            raise RuntimeError(f"baseline import failed:\n{b.tail()}")
        bases.append(b.wall)
    base = median(bases)
    print(f"  baseline: fresh interpreter importing wizard.commands/stages/cluster: median {base:.3f} s")
    rows: list[Row] = []
    lines = []
    with SandboxProc(*SANDBOX_ARGS) as sb:
        results = {"fresh": [audit_once(sb) for _ in range(RUNS)]}
        applied = sb.run("apply", "--yes", timeout=180)
        if applied.rc != 0:
            raise RuntimeError(f"apply exited {applied.rc}:\n{applied.tail()}")
        results["migrated"] = [audit_once(sb) for _ in range(RUNS)]
    for label, runs in results.items():
        wall = median([r["wall"] for r in runs])
        counts = sorted({r["requests"] for r in runs})
        mutating = [m for r in runs for m in r["mutating"]]
        methods = runs[0]["methods"]
        stages = runs[0]["stages"]
        lines.append([label, f"{wall:.3f} s", f"{min(r['wall'] for r in runs):.3f}–{max(r['wall'] for r in runs):.3f}",
                      f"{wall / base:.1f}×", "/".join(map(str, counts)),
                      " ".join(f"{k}:{v}" for k, v in sorted(methods.items())),
                      str(len(mutating)), ",".join(sorted({str(r["rc"]) for r in runs})),
                      " ".join(f"{k}:{v}" for k, v in sorted(stages.items())), verdict(not mutating)])
        rows.append(Row(NAME, f"{label}: audit wall (median of {RUNS})", f"{wall:.3f} s ({wall / base:.1f}× baseline)"))
        rows.append(Row(NAME, f"{label}: API requests per audit", "/".join(map(str, counts))))
        rows.append(Row(NAME, f"{label}: mutating requests ({RUNS} audits)", str(len(mutating)), "0",
                        verdict(not mutating)))
        if mutating:
            print(f"  {label}: mutating requests: {', '.join(sorted(set(mutating)))}")
    print(table(["cluster", "wall (median)", "min–max", "vs baseline", "requests/audit", "by method",
                 "mutating", "exit", "stages", "verdict"], lines))
    print("  (exit: 0 all pass, 1 findings, 2 could not check; a fresh cluster is expected to have findings)")
    return rows


if __name__ == "__main__":
    from .__main__ import main
    raise SystemExit(main([NAME]))
