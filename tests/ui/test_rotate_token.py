"""Rotating the Gitea token from the wizard (issue 18 §2, "and in the UI"): r asks for the new token's file (mode
600, as every command reads one) and a typed word, then runs the same rotation as ``ghcr2gitea rotate-token``; the
rollout shows each node restarting and proven, the end says the old token may be revoked. Neither token is ever
on the screen, in a screenshot or in the log."""

from __future__ import annotations

import os
import re

from helpers import run_cli, sandbox_state, secrets_and_node_files, until

from sandbox import cluster as C
from screens.app import INTERRUPTED
from screens.demo import demo_app
from screens.modals.help import HelpScreen
from screens.modals.quit import QuitScreen
from screens.modals.rotate import RotateTokenScreen, RotationScreen

OLD = "old-canary-5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d"
NEW = "new-canary-0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6"


def restarts(sb) -> dict[str, int]:
    return {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()}


def words(screen_text, app) -> str:
    """The screen's text with its line breaks and box edges as single spaces: a sentence wrapped still reads."""
    return " ".join(re.sub("[\u2500-\u259f]", " ", screen_text(app)).split())  # box drawing and blocks


async def type_into(pilot, selector: str, text: str) -> None:
    """Focus the field and type ``text`` key by key, as the operator does (what was there is cleared first)."""
    field = pilot.app.screen.query_one(selector)
    field.focus()
    field.clear()
    await pilot.press(*text)


async def test_rotate_token_from_the_wizard_shows_the_rollout_and_never_a_token(make_sandbox, tmp_path, settle,
                                                                               screen_text):
    sb = make_sandbox(servers=1, agents=1, gitea_token=OLD)
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    before = restarts(sb)
    sb.cluster.gitea.users[C.USERNAME].more_tokens.add(NEW)  # made in Gitea (Settings → Applications)
    new_file = tmp_path / "new-token"
    new_file.write_text(NEW + "\n")
    os.chmod(new_file, 0o644)
    app = demo_app(sb, node_timeout=20, blink=False, export_dir=tmp_path / "export", log_clock=lambda t: "--:--:--")
    seen: list[str] = []  # every screen read during the test, scanned for the tokens at the end
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")  # the help lists the key
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        await until(pilot, lambda: "Rotate the Gitea token" in screen_text(app), what="r in the help")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="the help closed")

        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RotateTokenScreen), what="the rotate dialog")
        # a file others can read is refused as the headless command refuses it, in the dialog
        await type_into(pilot, "#rotate-path", str(new_file))
        await type_into(pilot, "#rotate-confirm", "rotate")
        await pilot.press("enter")
        await until(pilot, lambda: "readable by group or others" in words(screen_text, app),
                    what="the mode refused with the fix")
        seen.append(screen_text(app))
        said = words(screen_text, app)
        # (the path itself wraps where the dialog's edge cuts it)
        assert "the new token's file /tmp" in said and "readable by group or others (mode 644); run: chmod" in said
        assert isinstance(app.screen, RotateTokenScreen)
        os.chmod(new_file, 0o600)
        await type_into(pilot, "#rotate-confirm", "yes")  # the word, exactly
        await pilot.press("enter")
        await until(pilot, lambda: "type rotate exactly" in words(screen_text, app), what="the typed word asked for")
        assert restarts(sb) == before  # nothing started yet
        await type_into(pilot, "#rotate-confirm", "rotate")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RotationScreen), what="the rotation screen")
        rotation = app.screen

        def restarting() -> bool:
            return any(p.phase in ("restarting", "waiting") for p in rotation.rollout.runs.values())
        await until(pilot, restarting, what="a node restarting in the rotation's rollout", timeout=120)
        await until(pilot, lambda: re.search(r" (restarting|waiting) +\d+\.\d s ", screen_text(app)),
                    what="the restarting row drawn, its phase whole")
        seen.append(screen_text(app))
        await pilot.press("escape")  # not while it runs
        await until(pilot, lambda: any(n.message.startswith("the rotation is running")
                                       for n in app._notifications), what="Esc refused mid-rotation")
        assert app.screen is rotation
        await until(pilot, lambda: rotation.code is not None, what="the rotation's end", timeout=180)
        await until(pilot, lambda: "old token can now be revoked" in words(screen_text, app), what="the revoke line")
        end = screen_text(app)
        seen += [end, app.export_screenshot(), *rotation.lines, *app.log_lines]
        assert rotation.code == 0, "\n".join(rotation.lines)
        assert set(rotation.rollout.runs) == set(before)
        assert {p.phase for p in rotation.rollout.runs.values()} == {"done"}  # each restarted and proven
        for node in before:
            assert node in end
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.screen_stack[0], what="back to the wizard")
        await settle(pilot)
        seen += [screen_text(app), app.export_screenshot(), *app.log_lines]
    assert restarts(sb) == {n: k + 1 for n, k in before.items()}
    world = secrets_and_node_files(sb)
    assert OLD not in world and NEW in world
    for text in seen:
        assert OLD not in text and NEW not in text, "a token reached the screen"
    assert any("restarted and proven" in line for line in rotation.lines)


async def test_rotate_token_refused_before_a_migration_says_so(make_sandbox, tmp_path, settle, screen_text):
    sb = make_sandbox(servers=1, agents=0, gitea_token=OLD)
    new_file = tmp_path / "new-token"
    new_file.write_text(NEW + "\n")
    os.chmod(new_file, 0o600)
    before = restarts(sb)
    app = demo_app(sb, node_timeout=20, blink=False, export_dir=tmp_path / "export", log_clock=lambda t: "--:--:--")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RotateTokenScreen), what="the rotate dialog")
        await type_into(pilot, "#rotate-path", str(new_file))
        await type_into(pilot, "#rotate-confirm", "rotate")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RotationScreen), what="the rotation screen")
        rotation = app.screen
        await until(pilot, lambda: rotation.code is not None, what="the refusal", timeout=60)
        await until(pilot, lambda: "migrate first" in words(screen_text, app), what="the refusal on screen")
        text = screen_text(app)
        assert rotation.code == 2 and OLD not in text and NEW not in text
    assert restarts(sb) == before


async def test_quitting_mid_rotation_asks_and_says_the_old_token_is_still_needed(make_sandbox, tmp_path, settle):
    sb = make_sandbox(servers=1, agents=1, gitea_token=OLD, restart_seconds=(2.0, 2.5))
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    sb.cluster.gitea.users[C.USERNAME].more_tokens.add(NEW)
    new_file = tmp_path / "new-token"
    new_file.write_text(NEW + "\n")
    os.chmod(new_file, 0o600)
    app = demo_app(sb, node_timeout=20, blink=False, export_dir=tmp_path / "export", log_clock=lambda t: "--:--:--")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RotateTokenScreen), what="the rotate dialog")
        await type_into(pilot, "#rotate-path", str(new_file))
        await type_into(pilot, "#rotate-confirm", "rotate")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RotationScreen), what="the rotation screen")
        rotation = app.screen
        await until(pilot, lambda: any(p.phase in ("restarting", "waiting") for p in rotation.rollout.runs.values()),
                    what="a node restarting", timeout=120)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="the quit question")
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, what="the wizard gone once the rotation stopped", timeout=120)
    assert app.return_code == INTERRUPTED
    assert "quit while rotating the Gitea token; the old token is still needed: do not revoke it" in app.exit_note
    assert OLD not in app.exit_note and NEW not in app.exit_note
