"""``ghcr2gitea audit --plan-dir D --context A --context B --context C``: a fleet audit against its parts.

Three sandboxes, each in its own process (1 server + 1 agent). First each cluster is audited alone, one
after another (``audit --format json``, a fresh ``ghcr2gitea`` per cluster); then the three at once with
one fleet audit. The fleet's wall time should be close to the slowest single audit, not their sum. No
Gitea token is given (the Credentials checks skip), the same for both, so the work is the same.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from ._common import REPO, Row, SandboxProc, cli, median, table, verdict

NAME = "fleet_audit"
RUNS = 3
SANDBOX_ARGS = ["--servers", "1", "--agents", "1", "--restart-seconds", "0.3:0.6"]


def _kubeconfig(path: Path, boxes: dict[str, SandboxProc]) -> None:
    cfg = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": [],
           "current-context": next(iter(boxes))}
    for name, sb in boxes.items():
        one = yaml.safe_load((sb.dir / "kubeconfig").read_text())
        cfg["clusters"].append({"name": name, "cluster": one["clusters"][0]["cluster"]})
        cfg["users"].append({"name": name, "user": one["users"][0]["user"]})
        cfg["contexts"].append({"name": name, "context": {"cluster": name, "user": name}})
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)


def _audit(argv: list[str], kubeconfig: Path) -> tuple[float, int, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("GITEA_TOKEN", "NO_COLOR")}
    env["KUBECONFIG"] = str(kubeconfig)
    t0 = time.perf_counter()
    p = subprocess.run([*cli(), *argv, "--format", "json"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    try:
        return wall, p.returncode, json.loads(p.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"audit printed no JSON (exit {p.returncode}): {p.stderr[-400:]}") from None


def run() -> list[Row]:
    print(f"== {NAME}: three single audits one after another vs one fleet audit of the three, {RUNS} runs")
    tmp = Path(tempfile.mkdtemp(prefix="ghcr2gitea-bench-"))
    boxes: dict[str, SandboxProc] = {}
    try:
        for name in ("a", "b", "c"):
            boxes[name] = SandboxProc(*SANDBOX_ARGS).__enter__()
        kc, plans = tmp / "fleet.kubeconfig", tmp / "plans"
        plans.mkdir()
        _kubeconfig(kc, boxes)
        for name, sb in boxes.items():
            shutil.copy(sb.dir / "plan.yaml", plans / f"{name}.yaml")
        singles, sums, fleets = [], [], []
        for _ in range(RUNS):
            walls = [_audit(["audit", "--plan", str(plans / f"{n}.yaml"), "--context", n], kc)[0] for n in boxes]
            singles.append(max(walls))
            sums.append(sum(walls))
            wall, rc, report = _audit(["audit", "--plan-dir", str(plans), *sum((["--context", n] for n in boxes), [])],
                                      kc)
            if sorted(report.get("clusters", {})) != sorted(boxes):
                raise RuntimeError(f"the fleet report names {sorted(report.get('clusters', {}))}, not {sorted(boxes)}")
            fleets.append(wall)
    finally:
        for sb in boxes.values():
            sb.close()
        shutil.rmtree(tmp, ignore_errors=True)
    slowest, total, fleet = median(singles), median(sums), median(fleets)
    ratio = fleet / slowest
    print(table(["", "wall (median)"], [["slowest single audit", f"{slowest:.2f} s"],
                                         ["three single audits, one after another", f"{total:.2f} s"],
                                         ["one fleet audit of the three", f"{fleet:.2f} s"]]))
    print(f"  fleet / slowest single: {ratio:.2f}×; fleet / sum: {fleet / total:.2f}×")
    return [Row(NAME, "fleet audit of 3 vs the slowest single audit", f"{ratio:.2f}×", "≤ 1.5×",
                verdict(ratio <= 1.5)),
            Row(NAME, "fleet audit of 3 vs three audits in a row", f"{fleet / total:.2f}×")]


if __name__ == "__main__":
    from .__main__ import main
    raise SystemExit(main([NAME]))
