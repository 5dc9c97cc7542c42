"""The fault suite's crash points through the wizard's path: a wizard run SIGKILLed at a crash point resumes.

The crash points belong to the one Run both faces drive (wizard/run.py), so a wizard run killed while it
applies leaves the same journal a headless run would: the next run — headless, or the wizard again —
offers to continue, and the cluster ends as an uninterrupted migration leaves it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli, sandbox_state

from screens.demo import demo_app

from .test_wizard import drive, restarts, wait_resume_offer

DRIVER = Path(__file__).with_name("kill_driver.py")


def kill_wizard_at(sb, point: str, state: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "GITEA_TOKEN")}
    env.update(GITEA_TOKEN=sb.token_file.read_text().strip(), XDG_STATE_HOME=str(state), GHCR2GITEA_KILL_AT=point,
               **extra)
    return subprocess.run([sys.executable, str(DRIVER), str(sb.plan), str(sb.kubeconfig)], env=env,
                          capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL)


def wizard_pods(sb) -> list[str]:
    return [p["name"] for p in sandbox_state(sb)["pods"]
            if "ghcr2gitea.io/role" in (p.get("labels") or {}) and not p["deleted"]]


def test_the_wizards_path_passes_every_crash_point_of_the_fault_suite(make_sandbox, tmp_path):
    """The fault suite kills the headless run at each crash point and resumes it (tests/reliability/
    test_faults.py). The wizard's run passes the very same points — those of every stage it applies, and each
    node's restart — so each of those kills can land on its path too; the tests below kill it at samples and
    resume. The stages that only check (Preflight, Credentials, Verify) have nothing to apply in the wizard,
    so no kill point lies inside them there."""
    from reliability.test_faults import KILL_POINTS
    sb = make_sandbox(restart_seconds=(0.2, 0.3))
    log = tmp_path / "crash-points.log"
    done = kill_wizard_at(sb, "", tmp_path / "state", GHCR2GITEA_CRASH_LOG=str(log))
    assert done.returncode == 0, done.stderr[-800:]
    reached = log.read_text().split()
    only_checks = {f"{when}:{key}" for when in ("before", "after") for key in ("preflight", "credentials", "verify")}
    assert set(reached) == set(KILL_POINTS) - only_checks, sorted(set(reached) ^ (set(KILL_POINTS) - only_checks))
    assert len(reached) == len(set(reached)), "a crash point passed twice"


@pytest.mark.parametrize("point", ["after:secrets", "restart:dellmini3"])
def test_a_wizard_run_killed_at_a_crash_point_resumes_headless(point, make_sandbox, tmp_path):
    sb = make_sandbox(restart_seconds=(0.2, 0.3))
    state = tmp_path / "state"
    killed = kill_wizard_at(sb, point, state)
    assert killed.returncode == -signal.SIGKILL, f"the wizard was not killed at {point}: {killed.stderr[-800:]}"
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", env={"XDG_STATE_HOME": str(state)})
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr
    assert "resuming an unfinished migration" in res.stdout, res.stdout[:600]
    assert set(restarts(sb).values()) == {1}, restarts(sb)
    assert wizard_pods(sb) == []


async def test_a_wizard_run_killed_at_a_crash_point_resumes_in_the_wizard(make_sandbox, settle, screen_text,
                                                                          tmp_path, journal_home):
    sb = make_sandbox(restart_seconds=(0.2, 0.3))
    killed = kill_wizard_at(sb, "before:registries", journal_home)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-800:]
    app = demo_app(sb, node_timeout=30, blink=False, export_dir=tmp_path / "export")
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_resume_offer(pilot, screen_text, "the wizard offering to resume after the killed run")
        await pilot.press("r")
        await settle(pilot, pods=False)
        s = app.session
        assert s.states[s.current].key == "registries", s.states[s.current].key
        await drive(pilot, settle)
        assert s.complete
    assert set(restarts(sb).values()) == {1}, restarts(sb)
    assert wizard_pods(sb) == []
