"""``ghcr2gitea rollback --yes`` against the forward ``apply --yes`` it takes back, on the same world.

One sandbox in its own process (the default world: 3 servers + 2 agents, Gitea empty), with the node
files a real cluster has before a migration (a docker.io mirror and another registry's credentials).
``apply --yes`` migrates it (images copied, every node restarted and proven); ``rollback --yes`` then
takes it all back (node files restored, every node restarted again and proven, workloads on their GHCR
images, the wizard's objects deleted). Figures: each wall time, rollback/forward, restarts per node (2
each after both), and that ``audit`` afterwards reports the pre-migration state (exit 1).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ._common import Row, SandboxProc, table, verdict

NAME = "rollback"
SANDBOX_ARGS = ["--restart-seconds", "2:4"]
EXISTING = ("mirrors:\n  docker.io:\n    endpoint:\n      - https://mirror.example.com\n"
            "configs:\n  quay.io:\n    auth:\n      username: robot\n      password: quay-bench-secret\n")


def _restarts(sb: SandboxProc) -> dict[str, int]:
    return {name: len(node["restarts"]) for name, node in sb.state()["nodes"].items()}


def run() -> list[Row]:
    print(f"== {NAME}: apply --yes, then rollback --yes, on the default world ({' '.join(SANDBOX_ARGS)})")
    tmp = Path(tempfile.mkdtemp(prefix="ghcr2gitea-bench-"))
    try:
        existing = tmp / "registries.yaml"
        existing.write_text(EXISTING)
        return _run(existing)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(existing: Path) -> list[Row]:
    with SandboxProc(*SANDBOX_ARGS, "--existing-registries", str(existing)) as sb:
        forward = sb.run("apply", "--yes", timeout=600)
        if forward.rc != 0:
            raise RuntimeError(f"apply failed (exit {forward.rc}):\n{forward.tail()}")
        back = sb.run("rollback", "--yes", timeout=600)
        if back.rc != 0:
            raise RuntimeError(f"rollback failed (exit {back.rc}):\n{back.tail()}")
        restarts = _restarts(sb)
        audit = sb.run("audit", timeout=300)
    ratio = back.wall / forward.wall
    twice = all(n == 2 for n in restarts.values())
    print(table(["run", "wall s", "what"], [
        ["apply --yes", f"{forward.wall:.1f}", "images copied, 5 nodes written, restarted and proven, workloads"],
        ["rollback --yes", f"{back.wall:.1f}", "5 nodes restored, restarted and proven, workloads, objects"],
    ]))
    print(f"  rollback/forward {ratio:.2f}; restarts per node {restarts}; audit afterwards exit {audit.rc}")
    return [Row(NAME, "rollback wall s", f"{back.wall:.1f}"),
            Row(NAME, "apply wall s", f"{forward.wall:.1f}"),
            Row(NAME, "rollback/forward", f"{ratio:.2f}", "≤ 1.0", verdict(ratio <= 1.0)),
            Row(NAME, "restarts per node after both", "2 each" if twice else str(restarts), "2 each",
                verdict(twice)),
            Row(NAME, "audit exit after rollback", str(audit.rc), "1 (pre-migration)", verdict(audit.rc == 1))]
