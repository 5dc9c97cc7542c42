"""``ghcr2gitea demo`` in a real terminal (tmux): read the screen, press keys, check what a person sees."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


class Terminal:
    """One tmux session of a given size running one command; stopped by its own name."""

    def __init__(self, command: str, size: tuple[int, int], env: dict[str, str], cwd: Path):
        self.name = f"ghcr2gitea-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        # the size is pinned before the command starts (window-size "latest" lets other clients resize it),
        # and COLUMNS/LINES are dropped: the tmux server inherits them from whoever started it, and a
        # program that reads them first (shutil.get_terminal_size) would believe them over the pane
        subprocess.run([TMUX, "new-session", "-d", "-s", self.name, "-x", str(size[0]), "-y", str(size[1]),
                        "sleep 60"], check=True)
        subprocess.run([TMUX, "set-option", "-t", self.name, "window-size", "manual"], check=True)
        subprocess.run([TMUX, "resize-window", "-t", self.name, "-x", str(size[0]), "-y", str(size[1])], check=True)
        subprocess.run([TMUX, "respawn-pane", "-k", "-t", self.name,
                        f"cd {cwd} && env -u COLUMNS -u LINES {exports} {command}; echo \"[exited $?]\"; sleep 30"],
                       check=True)

    def screen(self) -> str:
        res = subprocess.run([TMUX, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return res.stdout

    def press(self, *keys: str) -> None:
        subprocess.run([TMUX, "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, *texts: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            scr = self.screen()
            if all(t in scr for t in texts):
                return scr
            if time.monotonic() > deadline:
                raise AssertionError(f"after {timeout} s the screen lacks {texts}:\n{scr}")
            time.sleep(0.2)

    def close(self) -> None:
        subprocess.run([TMUX, "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def terminal(tmp_path):
    opened: list[Terminal] = []

    def open_(args: str, size=(120, 36)) -> Terminal:
        exe = Path(sys.executable).parent / "ghcr2gitea"
        # PYTHONPATH: the checkout under test, not whichever one the venv's editable install names
        env = {"XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(tmp_path), "TERM": "xterm-256color",
               "KUBECONFIG": "", "GITEA_TOKEN": "", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        t = Terminal(f"{exe} {args}", size, env, tmp_path)
        opened.append(t)
        return t
    yield open_
    for t in opened:
        t.close()


def test_demo_in_a_real_terminal_shows_stages_live_nodes_and_follows_keys(terminal, tmp_path):
    t0 = time.monotonic()
    term = terminal(f"demo --dir {tmp_path / 'sb'} --restart-seconds 0.2:0.4")
    scr = term.wait_for("dellmini1", "lenovomini", "Preflight", "cluster reachable", timeout=10)
    first_screen = time.monotonic() - t0
    scr = term.wait_for("▶  1 Preflight", "all gating checks pass")  # the gate line follows the checks
    assert "Ready" in scr and "server" in scr and "agent" in scr
    token = (tmp_path / "sb" / "token").read_text().strip()
    term.press("n")
    scr = term.wait_for("Stage 2/11 · Credentials", "token accepted by Gitea")
    assert "✓  1 Preflight" in scr
    term.press("n")
    scr = term.wait_for("Stage 3/11 · Registry secrets", "2 change(s)")
    assert "<secret, sha256:" in scr and token not in scr
    assert "Next ▶" in scr and "2 change(s) to apply first" in scr
    term.press("a")
    scr = term.wait_for("Checks ✓2", "all gating checks pass")
    term.press("l")
    scr = term.wait_for("create Secret default/gitea-registry-push")
    assert token not in scr
    term.press("q")
    term.wait_for("[exited 0]", timeout=20)
    assert first_screen < 10, f"first screen after {first_screen:.1f} s"


def test_demo_at_80x24(terminal, tmp_path):
    term = terminal(f"demo --dir {tmp_path / 'sb'}", size=(80, 24))
    scr = term.wait_for("dellmini1", "Preflight", "Next", timeout=10)
    assert all(len(line) <= 80 for line in scr.splitlines())
    term.press("q")
    term.wait_for("[exited 0]", timeout=20)


def test_ghcr2gitea_without_a_command_opens_the_wizard_on_the_kubeconfig(terminal, sandbox):
    term = terminal(f"--kubeconfig {sandbox.kubeconfig}")
    scr = term.wait_for("No migration plan", "ghcr2gitea init --out plan.yaml", "dellmini1", timeout=10)
    assert "Preflight" in scr
    term.press("q")
    term.wait_for("[exited 0]", timeout=20)
    term = terminal(f"--kubeconfig {sandbox.kubeconfig} --plan {sandbox.plan} --token-file {sandbox.token_file}")
    scr = term.wait_for("Stage 1/11 · Preflight", "all gating checks pass", "lenovomini", timeout=15)
    term.press("q")
    term.wait_for("[exited 0]", timeout=20)


def test_audit_on_a_terminal_opens_the_read_only_wizard_and_exports(terminal, sandbox, tmp_path):
    from helpers import mutating_requests
    before = mutating_requests(sandbox)
    term = terminal(f"audit --kubeconfig {sandbox.kubeconfig} --plan {sandbox.plan} --token-file {sandbox.token_file}")
    scr = term.wait_for("AUDIT — read-only", "Preflight", "dellmini1", timeout=15)
    assert "a Apply" not in scr and "Next ▶" not in scr
    term.wait_for("✗  3 Registry secrets", timeout=30)
    term.press("e")
    term.wait_for("report written", timeout=15)
    assert len(list(tmp_path.glob("ghcr2gitea-audit-*.json"))) == 1
    assert len(list(tmp_path.glob("ghcr2gitea-audit-*.md"))) == 1
    term.press("q")
    term.wait_for("[exited 0]", timeout=20)
    assert mutating_requests(sandbox) == before


def test_help_then_quit_mid_apply_and_the_demo_run_again_offers_to_resume(terminal, tmp_path):
    command = f"demo --dir {tmp_path / 'sb'} --restart-seconds 6:6"
    term = terminal(command)
    term.wait_for("Stage 1/11 · Preflight", "all gating checks pass", "dellmini1", timeout=15)
    term.press("?")
    scr = term.wait_for("Help — keys of the wizard", "Re-check", "Override a failed check")
    assert "Pass over a failed gating check" in scr
    term.press("Escape")
    scr = term.wait_for("Stage 1/11 · Preflight", "dellmini1")
    assert "Help — keys" not in scr
    for k in range(1, 8):  # Apply and Next through to the rolling restart
        term.wait_for(f"Stage {k}/11", timeout=30)
        deadline = time.monotonic() + 90
        # until the next stage opens: a stage just opened may still read the gate line of the one before, so a
        # refused Next is pressed again once its changes are seen and applied
        while f"Stage {k + 1}/11" not in (scr := term.screen()):
            assert time.monotonic() < deadline, scr
            if "to apply first" in scr:
                term.press("a")
                term.wait_for(f"Stage {k}/11", "all gating checks pass", timeout=60)
            elif "all gating checks pass" in scr:
                term.press("n")
            time.sleep(0.2)
    term.wait_for("Stage 8/11 · Rolling restart", "to apply first", timeout=60)
    term.press("a")
    term.wait_for("proven 0/5", timeout=30)
    term.press("q")
    scr = term.wait_for("Quit while applying?", "If you quit now", timeout=10)
    assert "is restarting now" in scr or "stops before the next node" in scr
    term.press("y")
    scr = term.wait_for("[exited 130]", timeout=60)
    # the demo keeps its world in its folder: the line says how to resume, the next says where the folder is
    line = scr.replace("\n", "")
    assert f"nothing is lost — to resume, run `ghcr2gitea {command}` again" in line, line
    assert f"ghcr2gitea demo: the demo's folder is {tmp_path / 'sb'} (its world, journal and report exports are " \
           "kept" in line, line
    term.close()
    term = terminal(command)
    scr = term.wait_for("Unfinished migration of this cluster", "stopped in: Rolling restart", "Start fresh (s)",
                        timeout=60)
    assert "re-inspected: the 7 done stage(s) still pass" in scr.replace("\n", ""), scr
    term.press("r")
    term.wait_for("Stage 8/11 · Rolling restart", timeout=60)
    term.press("q")
    term.wait_for("[exited 0]", timeout=30)
