"""A run that lost its Lease stops: after a takeover it sends no mutating request, and exits 2 naming the holder.

The finding: a run suspended past its Lease TTL (a laptop asleep), taken over by a second run as the
message advises, then resumed, went on and restarted two nodes a second time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from helpers import MUTATING, poll, run_cli, sandbox_state

from wizard.cluster import ClusterReader
from wizard.lock import LEASE_NAME, LEASE_NAMESPACE, ClusterLock

TTL = "3"


def _lease_stale(sb) -> bool:
    reader = ClusterReader.connect(str(sb.kubeconfig), patience=5)
    try:
        holder = ClusterLock(reader).holder()
        return holder is not None and holder.renewed is not None and \
            (datetime.now(UTC) - holder.renewed).total_seconds() > int(TTL) + 0.5
    finally:
        reader.close()


def test_suspended_run_taken_over_sends_nothing_after_it_wakes(make_sandbox, tmp_path, reliability):
    sb = make_sandbox(restart_seconds=(1.0, 1.0))
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "GITEA_TOKEN")}
    env.update(KUBECONFIG=str(sb.kubeconfig), GITEA_TOKEN=sb.token_file.read_text().strip(),
               XDG_STATE_HOME=str(sb.dir / "xdg-state"), GHCR2GITEA_LEASE_TTL=TTL)
    out = (tmp_path / "first.out").open("w")
    first = subprocess.Popen([str(Path(sys.executable).parent / "ghcr2gitea"), "apply", "--plan", str(sb.plan),
                              "--yes"], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        # suspend it mid-rollout: dellmini1 done, dellmini3's restart under way
        poll(lambda: any(r["end"] is None for r in sandbox_state(sb)["nodes"]["dellmini3"]["restarts"]),
             timeout=120, what="dellmini3 restarting")
        first.send_signal(signal.SIGSTOP)
        poll(lambda: _lease_stale(sb), timeout=30, what="the first run's Lease going stale")

        second = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--take-over-stale-lock",
                         env={"GHCR2GITEA_LEASE_TTL": TTL})
        assert second.returncode == 0, second.stdout + second.stderr

        mark = len(sandbox_state(sb)["requests"])
        first.send_signal(signal.SIGCONT)
        rc = first.wait(120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        out.close()
    text = (tmp_path / "first.out").read_text()
    assert rc == 2, text
    assert "lost the cluster lock" in text, text
    assert "Traceback" not in text
    after = sandbox_state(sb)["requests"][mark:]
    mine = [f"{r['method']} {r['path']}" for r in after if f"pid {first.pid})" in r.get("user_agent", "")]
    assert mine, "the woken run made no request at all: the test would prove nothing"
    assert [m for m in mine if m.split()[0] in MUTATING] == [], mine
    # the lease is the second run's business: released by it, not recreated or deleted by the first
    reader = ClusterReader.connect(str(sb.kubeconfig), patience=5)
    try:
        assert reader.get("Lease", LEASE_NAME, LEASE_NAMESPACE) is None
    finally:
        reader.close()
    reliability.record("lost lock", "a run SIGSTOPped mid-rollout past its Lease TTL, taken over by a second run "
                       "that finished the migration, then SIGCONTed",
                       f"the woken run sent {len(mine)} request(s), none mutating, and exited 2 saying it lost the "
                       "cluster lock")
