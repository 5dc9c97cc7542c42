"""A migration started in one face of the wizard resumes in the other, on another machine (another XDG state).

The journal's ConfigMap mirror is what makes this work; the UI path never wrote it before (it tested an
attribute that existed nowhere), so a wizard run could only be resumed from the laptop that started it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import poll, run_cli, sandbox_state

from .test_wizard import drive, restarts, wait_restarting, wait_resume_offer


async def test_a_wizard_run_resumes_headless_from_another_machine(wizard, settle, tmp_path, journal_home):
    app, sb = wizard(restart_seconds=(0.8, 0.8))
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="restart")
        await pilot.press("a")
        await wait_restarting(pilot, "dellmini3")
    # the laptop is gone: another machine (its own, empty XDG state) runs apply headless
    elsewhere = tmp_path / "other-machine-state"
    assert not list(journal_home.glob("**/*.json")) or elsewhere != journal_home
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", env={"XDG_STATE_HOME": str(elsewhere)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming an unfinished migration" in res.stdout, res.stdout
    assert "done: preflight, credentials, secrets" in res.stdout, res.stdout
    assert set(restarts(sb).values()) == {1}, restarts(sb)


async def test_a_headless_run_resumes_in_the_wizard_from_another_machine(wizard, settle, screen_text, tmp_path,
                                                                          journal_home):
    app, sb = wizard(restart_seconds=(0.5, 0.5))
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "GITEA_TOKEN")}
    env.update(KUBECONFIG=str(sb.kubeconfig), GITEA_TOKEN=sb.token_file.read_text().strip(),
               XDG_STATE_HOME=str(tmp_path / "first-machine-state"), GHCR2GITEA_KILL_AT="restart:dellmini3")
    proc = subprocess.run([str(Path(sys.executable).parent / "ghcr2gitea"), "apply", "--plan", str(sb.plan),
                           "--yes"], env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == -9, proc.stdout + proc.stderr  # killed at the crash point
    poll(lambda: any(r["end"] is not None for r in sandbox_state(sb)["nodes"]["dellmini3"]["restarts"]),
         timeout=30, what="dellmini3's restart to finish")
    async with app.run_test(size=(120, 36)) as pilot:
        offer = await wait_resume_offer(pilot, screen_text, "the wizard on another machine offering to resume")
        assert "Unfinished migration" in offer and "stopped in: Rolling restart" in offer, offer
        await pilot.press("r")
        await settle(pilot, pods=False)
        s = app.session
        assert s.states[s.current].key == "restart"
        await drive(pilot, settle)
        assert s.complete
    assert set(restarts(sb).values()) == {1}, restarts(sb)
