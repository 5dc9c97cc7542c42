"""Rolling the migration back from the wizard (issue 18 §1, "a Rollback action in the UI"): b asks for the typed
word, then runs the same rollback as ``ghcr2gitea rollback``; the rollout shows each node restarting and proven,
and afterwards every node's file and every workload are what they were before the migration."""

from __future__ import annotations

from helpers import EXISTING_REGISTRIES, run_cli, sandbox_state, until

from sandbox.containerd import REGISTRIES_PATH
from screens.demo import demo_app
from screens.modals.help import HelpScreen
from screens.modals.rollback import RollbackConfirmScreen, RollbackScreen


def node_files(sb) -> dict:
    return {n: v["files"].get(REGISTRIES_PATH) for n, v in sandbox_state(sb)["nodes"].items()}


async def test_rollback_from_the_wizard_restores_the_nodes_and_says_so(make_sandbox, tmp_path, settle, screen_text):
    sb = make_sandbox(servers=1, agents=1, existing_registries=EXISTING_REGISTRIES)
    before = node_files(sb)
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    restarts = {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()}
    app = demo_app(sb, node_timeout=20, blink=False, export_dir=tmp_path / "export", log_clock=lambda t: "--:--:--")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        await until(pilot, lambda: "Roll the migration back" in screen_text(app), what="b in the help")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="the help closed")
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, RollbackConfirmScreen), what="the rollback dialog")
        await pilot.press(*"yes", "enter")
        await until(pilot, lambda: "type rollback exactly" in screen_text(app), what="the typed word asked for")
        assert node_files(sb) != before  # nothing started yet
        field = app.screen.query_one("#rollback-confirm")
        field.clear()
        await pilot.press(*"rollback", "enter")
        await until(pilot, lambda: isinstance(app.screen, RollbackScreen), what="the rollback screen")
        screen = app.screen
        await until(pilot, lambda: screen.code is not None, what="the rollback's end", timeout=180)
        assert screen.code == 0, "\n".join(screen.lines)
        await until(pilot, lambda: "Rolled back" in screen_text(app), what="the end line")
        assert {p.phase for p in screen.rollout.runs.values()} == {"done"}  # each restarted and proven
        assert any("Workloads back" in line for line in screen.lines)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.screen_stack[0], what="back to the wizard")
    assert node_files(sb) == before
    assert {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()} == {n: k + 1 for n, k in
                                                                                        restarts.items()}
