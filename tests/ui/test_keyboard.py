"""Every scrollable thing scrolls from the keyboard, focus shows, each stage's diff opens at its top, and Escape
closes every dialog without doing anything else."""

from __future__ import annotations

import pytest
from helpers import mutating_requests, until
from textual.screen import ModalScreen

from screens.modals.adopt import AdoptScreen
from screens.modals.authflow import AuthFlowScreen
from screens.modals.help import HelpScreen
from screens.modals.override import OverrideScreen
from screens.modals.quit import QuitScreen
from screens.modals.report import ReportScreen
from screens.modals.resume import FreshResumeScreen, ResumeScreen
from screens.modals.rollback import RollbackConfirmScreen
from screens.modals.rotate import RotateTokenScreen
from screens.widgets.keys import KeyScroll
from wizard.credentials import Secret

from .test_wizard import drive, restarts


async def _view(pilot, key: str) -> None:
    """Open the stage ``key`` from the stage list, as an operator does: focus the list, move, Enter."""
    app = pilot.app
    i = [st.key for st in app.session.states].index(key)
    app.query_one("#stages").focus()
    await pilot.press("home", *["down"] * i, "enter")
    await until(pilot, lambda: app.viewing == i, what=f"Enter on the list opens {key}")


async def _tab_to(pilot, widget_id: str, presses: int = 12) -> None:
    """Tab until the widget has focus (it must be reachable by Tab)."""
    for _ in range(presses):
        if pilot.app.focused is not None and pilot.app.focused.id == widget_id:
            return
        await pilot.press("tab")  # press waits until the key is handled: focus has moved
    raise AssertionError(f"#{widget_id} is not reachable with Tab (focus: {pilot.app.focused})")


async def _scrolls_from_the_keyboard(pilot, pane) -> None:
    assert pane.max_scroll_y >= 2, "the test needs a pane taller than the screen"
    await pilot.press("j")
    await until(pilot, lambda: pane.scroll_y == 1, what=f"j scrolls one line down (at {pane.scroll_y})")
    await pilot.press("k")
    await until(pilot, lambda: pane.scroll_y == 0, what="k scrolls back to the top")
    await pilot.press("down", "pagedown")
    await until(pilot, lambda: pane.scroll_y > 1, what="down and pagedown scroll past the first line")
    await pilot.press("end")
    await until(pilot, lambda: pane.scroll_y == pane.max_scroll_y, what="end scrolls to the bottom")
    await pilot.press("home")
    await until(pilot, lambda: pane.scroll_y == 0, what="home scrolls to the top")


def _look(app, widget) -> list:
    """How the widget is drawn: the style of each of its cells, as the screen composes them."""
    r = widget.region
    return [app.screen.get_style_at(x, y) for y in range(r.y, r.bottom) for x in range(r.x, r.right)]


async def _drawn(pilot, widget) -> list:
    """The widget's look once drawn: the same across one more round of the app's pending work."""
    seen = [None]

    def same() -> bool:
        now = _look(pilot.app, widget)
        steady, seen[0] = now == seen[0], now
        return steady
    await until(pilot, same, what=f"#{widget.id} drawn")
    return seen[0]


async def _focus_shows(pilot, widget, focus) -> None:
    """Focus is visible: the same widget, showing the same lines, is drawn differently focused than not; and
    back as it was once focus leaves it."""
    app = pilot.app
    assert not widget.has_focus
    unfocused = await _drawn(pilot, widget)
    await focus()
    assert widget.has_focus
    await until(pilot, lambda: _look(app, widget) != unfocused,
                what=f"#{widget.id} drawn differently once it has focus (a tint, an accent scrollbar, a cursor)")
    app.query_one("#stages").focus()
    await until(pilot, lambda: _look(app, widget) == unfocused,
                what=f"#{widget.id} drawn as before once focus leaves it: the difference was its focus")
    await focus()


async def test_diffs_checks_and_the_log_scroll_from_the_keyboard_and_each_diff_opens_at_its_top(
        wizard, settle):
    app, sb = wizard(audit=True)  # every stage planned and checked: each can be opened and scrolled
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await _view(pilot, "proxy")
        await pilot.click("#--content-tab-tab-changes")
        changes = app.query_one("#changes-scroll", KeyScroll)
        await until(pilot, lambda: changes.max_scroll_y > 0, what="the Proxy diff on the Changes tab")
        await _focus_shows(pilot, changes, lambda: _tab_to(pilot, "changes-scroll"))
        await _scrolls_from_the_keyboard(pilot, changes)
        await pilot.press("end")
        await until(pilot, lambda: changes.scroll_y > 0, what="end scrolls the diff down")
        # another stage's Changes tab starts at the top of ITS diff, not at the last one's offset
        await _view(pilot, "secrets")
        await pilot.click("#--content-tab-tab-changes")
        await until(pilot, lambda: "gitea-registry-push" in str(app.query_one("#changes").render())
                    and changes.max_scroll_y > 0, what="the Registry secrets diff on the Changes tab")
        assert changes.scroll_y == 0
        # the checks: j/k move the table's cursor, the detail pane below follows it and scrolls too
        await pilot.click("#--content-tab-tab-checks")
        table = app.query_one("#checks")
        await until(pilot, lambda: table.row_count > 1, what="the Secrets checks in their table")
        await _focus_shows(pilot, table, lambda: _tab_to(pilot, "checks"))
        assert table.row_count > 1 and table.cursor_row == 0
        await pilot.press("j")
        await until(pilot, lambda: table.cursor_row == 1 and app.query_one("#checks-view").highlighted.name in str(
            app.query_one("#check-detail").render()), what="j moves to the second check and its detail follows")
        await pilot.press("k")
        await until(pilot, lambda: table.cursor_row == 0, what="k moves back to the first check")
        # the detail pane holds one check: nothing to scroll, no scrollbar to light up; its focus shows all the same
        detail = app.query_one("#check-detail-scroll", KeyScroll)
        assert detail.max_scroll_y == 0
        await _focus_shows(pilot, detail, lambda: _tab_to(pilot, "check-detail-scroll"))
        # the log: open it, Tab to it, scroll it
        await pilot.press("l")
        for i in range(80):
            app._log(f"line {i}")
        log = app.query_one("#log")
        await until(pilot, lambda: log.max_scroll_y >= 2, what="80 lines in the log, taller than its pane")
        await _focus_shows(pilot, log, lambda: _tab_to(pilot, "log", presses=20))
        await pilot.press("home")
        await until(pilot, lambda: log.scroll_y == 0, what="home scrolls the log to its top")
        await _scrolls_from_the_keyboard(pilot, log)


async def test_the_auth_flow_scrolls_from_the_keyboard(wizard, settle):
    app, sb = wizard(audit=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await _view(pilot, "verify")
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, AuthFlowScreen), what="f opens the auth flow")
        flow = app.screen.query_one("#flow-scroll", KeyScroll)
        assert flow.has_focus  # focused on open: the keys scroll at once
        await _scrolls_from_the_keyboard(pilot, flow)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, AuthFlowScreen), what="escape closes the auth flow")


async def test_at_80x24_help_and_quit_stay_in_the_footer_and_every_action_is_reachable(wizard, settle,
                                                                                       screen_text):
    app, sb = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        footer = screen_text(app).rstrip("\n").splitlines()[-1]
        assert "? Help" in footer and "q Quit" in footer and "palette" not in footer, footer
        # the buttons that do not fit (Re-check, Override) keep their keys, in the footer and in the help
        assert "v Re-check" in footer and "o Override" in footer
        await pilot.press("question_mark")
        await until(pilot, lambda: "Help — keys of the wizard" in screen_text(app), what="? opens the help")
        listed = {name for _, rows in app.screen.groups for _, name, _ in rows}  # what the help pane scrolls
        assert all(name in listed for name, _ in app.ACTIONS_HELP.values())
        assert "Help — keys of the wizard" in screen_text(app)
        assert ("Ctrl+P", "Command palette") in {r[:2] for _, rows in app.screen.groups for r in rows}
        await pilot.press("escape")
        await pilot.resize_terminal(120, 36)
        await until(pilot, lambda: "palette" in screen_text(app).rstrip("\n").splitlines()[-1],
                    what="the palette's key in the footer once there is room")


async def test_proof_names_show_at_120_columns_and_letters_with_a_legend_at_80(screen_text):
    from textual.app import App

    from screens.widgets.rollout import RolloutView
    from wizard.restart import PROOFS
    from wizard.stages.base import Progress

    class One(App):
        def compose(self):
            yield RolloutView(id="rollout-view")

    got = {k: i < 2 for i, k in enumerate(PROOFS)}
    for size, shows, hides in (((120, 20), ["Proofs", "✓start ✓unit ·beat ·event ·Ready ·ctrd"], ["subeRc"]),
                               ((80, 20), ["subeRc", "✓✓····", "subeRc = start unit beat event Ready ctrd"],
                                ["✓start"])):
        app = One()
        async with app.run_test(size=size) as pilot:
            view = app.query_one(RolloutView)
            view.update_runs({"dellmini1": Progress("restart", "dellmini1: waiting for heartbeat", "dellmini1",
                                                    "waiting", got, 0.0, 1.0)})
            drawn = f"{shows} on the screen at {size}"
            await until(pilot, lambda a=app, want=shows: all(w in screen_text(a) for w in want), what=drawn)
            text = screen_text(app)
            assert not any(h in text for h in hides), (size, text)  # drawn in the same frame as what it shows


async def test_an_advisory_warning_is_said_on_the_stage_and_names_the_safer_option(wizard, settle, screen_text):
    app, sb = wizard(audit=True)  # the demo plan keeps the guide's registry.node_tls: skip_verify
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await _view(pilot, "registries")
        text = screen_text(app)
        assert "! warning: nodes verify the registry's certificate — safer: registry.node_tls: ca" in text
        assert "!1" in text  # counted on the Checks tab, beside ✓ and ✗


async def test_after_a_migration_the_ingress_stage_warns_of_traefiks_default_certificate(make_sandbox, tmp_path,
                                                                                         settle, screen_text):
    # issue 17: the HTTPS ingress stage passed while the realm served Traefik's default certificate, unsaid
    from helpers import run_cli

    from screens.demo import demo_app
    sb = make_sandbox(servers=1, agents=1)
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    app = demo_app(sb, audit=True, node_timeout=20, blink=False, export_dir=tmp_path / "export",
                   log_clock=lambda t: "--:--:--")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await _view(pilot, "ingress")
        await until(pilot, lambda: "Stage 6/11 · HTTPS ingress" in screen_text(app), what="the ingress stage shown")
        text = screen_text(app)
        assert "! warning: the realm's certificate can be verified — safer: registry.node_tls: ca" in text, text


def test_the_usage_docs_key_table_lists_every_key_of_the_wizard():
    # issue 17: "docs/usage.md describes the UI as it is" — a key added to the app is a row in the table
    import re
    from pathlib import Path

    from screens.app import WizardApp
    from screens.modals.help import key_name
    text = (Path(__file__).parents[2] / "docs" / "usage.md").read_text()
    section = text.split("## The wizard", 1)[1].split("\n## ", 1)[0]
    documented = {k for row in section.splitlines() if row.startswith("| `")
                  for k in re.findall(r"`([^`]+)`", row.split("|")[1])}
    keys = {key_name(None, b.key) for b in WizardApp.BINDINGS if not b.action.startswith("why_not")}
    assert keys and keys <= documented, keys - documented


# ---------------------------------------------------------------------- Escape closes every dialog (issue 17)
async def _failing_check(pilot, settle) -> None:
    """Credentials with a token Gitea refuses: a failed gating check (override) that walks the token flow (f)."""
    s = pilot.app.session
    s.ctx.token = Secret("a-wrong-token-" + "x" * 20)
    await pilot.press("n")
    await settle(pilot)
    assert s.states[s.current].key == "credentials" and s.blocking(s.current)


async def _open_override(pilot, sb, settle, later) -> None:
    await _failing_check(pilot, settle)
    await pilot.press("o")


async def _open_auth_flow(pilot, sb, settle, later) -> None:
    await _failing_check(pilot, settle)
    await pilot.press("f")


async def _open_help(pilot, sb, settle, later) -> None:
    await pilot.press("question_mark")


async def _open_report(pilot, sb, settle, later) -> None:
    pilot.app.action_report()  # no key of its own: the command palette's Report, or the end of the migration


async def _open_rollback(pilot, sb, settle, later) -> None:
    await pilot.press("b")


async def _open_rotate(pilot, sb, settle, later) -> None:
    await pilot.press("r")


async def _open_adopt(pilot, sb, settle, later) -> None:
    """Another team's ConfigMap where the wizard would write its own: Apply stops on it and t offers adoption."""
    from wizard.cluster import Cluster, kind_of
    cluster = Cluster.connect(str(sb.kubeconfig), patience=10)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gitea-proxy-ca", "namespace": "default"},
          "data": {"ca.crt": "the payments team's CA bundle\n"}}
    try:
        cluster.request("POST", kind_of(cm).path("default"), body=cm,
                        query={"fieldManager": "kubectl-client-side-apply"}, content_type="application/json")
    finally:
        cluster.close()
    s = pilot.app.session
    while not s.states[s.current].changes:  # Preflight and Credentials write nothing
        await pilot.press("n")
        await settle(pilot)
    await pilot.press("a")
    await settle(pilot)
    assert "gitea-proxy-ca: exists and is not managed by ghcr2gitea" in s.states[s.current].error.cause
    await pilot.press("t")


async def _open_quit(pilot, sb, settle, later) -> None:
    """q while stage Images copies (its shared base layers held by the sandbox GHCR: the copy stays under way);
    ``later`` gets what, after Escape, proves the apply went on: released, it finishes, and the wizard stays."""
    ghcr = sb.cluster.ghcr
    held = [ghcr.hold(d) for r in ghcr.repos.values() for d, data in r.blobs.items()
            if len(data) == sb.opts.ghcr_layer_size]
    app = pilot.app
    s = app.session

    async def goes_on() -> None:
        st = s.states[s.current]
        assert st.key == "images" and st.busy == "applying", "Escape stopped the copy"
        for ev in held:
            ev.set()
        await settle(pilot)
        assert st.applied and st.error is None and s.can_advance(), s.next_reason()
    later.append(goes_on)
    try:
        await drive(pilot, settle, until="images")
        await pilot.press("a")
        await until(pilot, lambda: s.states[s.current].busy == "applying", what="stage Images copying")
        await pilot.press("q")
    except BaseException:
        for ev in held:
            ev.set()
        raise


DIALOGS = {  # what Escape is tried on: every ModalScreen of screens/ (test_every_dialog_is_in_the_escape_test)
    "override": (OverrideScreen, _open_override),
    "quit mid-apply": (QuitScreen, _open_quit),
    "adopt": (AdoptScreen, _open_adopt),
    "rollback": (RollbackConfirmScreen, _open_rollback),
    "rotate token": (RotateTokenScreen, _open_rotate),
    "help": (HelpScreen, _open_help),
    "report": (ReportScreen, _open_report),
    "auth flow": (AuthFlowScreen, _open_auth_flow),
    "resume": (ResumeScreen, None),  # None: the wizard opens it itself, over an unfinished migration
    "resume or start fresh": (FreshResumeScreen, None),
}


def test_every_dialog_is_in_the_escape_test():
    import screens.app  # noqa: F401 - imports every dialog the wizard opens

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    ours = {c for c in subclasses(ModalScreen) if c.__module__.startswith("screens.")}
    assert ours == {cls for cls, _ in DIALOGS.values()}, ours ^ {cls for cls, _ in DIALOGS.values()}


def _what_was_done(app, sb) -> tuple:
    """The cluster's writes and node restarts, the overrides, the journal's events, the operation under way."""
    s = app.session
    return (mutating_requests(sb), restarts(sb), list(s.overrides), list(getattr(s.journal, "events", None) or []),
            s.operation)


@pytest.mark.parametrize("dialog", list(DIALOGS))
async def test_escape_closes_every_dialog_and_does_nothing_else(dialog, wizard, settle):
    from screens.demo import demo_app
    cls, opener = DIALOGS[dialog]
    app, sb = wizard()
    if opener is None:  # a first wizard writes and leaves: its run is unfinished, and the next one offers it
        async with app.run_test(size=(120, 36)) as pilot:
            await drive(pilot, settle, until="images")
        fresh = {"start_fresh": "makes a new cluster"} if cls is FreshResumeScreen else {}
        app = demo_app(sb, node_timeout=30, blink=False, log_clock=lambda t: "--:--:--", **fresh)
    later: list = []
    async with app.run_test(size=(120, 36)) as pilot:
        base = app.screen_stack[0]
        s = app.session
        if opener is not None:
            await settle(pilot)
            await opener(pilot, sb, settle, later)
        await until(pilot, lambda: type(app.screen) is cls, what=f"the {dialog} dialog open", timeout=60)
        if cls is not QuitScreen:  # (mid-apply, the copy under way goes on writing: what Escape left is below)
            await settle(pilot, pods=False)
        before = _what_was_done(app, sb)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is base, what=f"Escape closes the {dialog} dialog")
        assert app.screen_stack == [base] and not isinstance(app.screen, ModalScreen)
        for check in later:
            await check()
        await settle(pilot, pods=False)
        assert app.is_running and app.return_code is None and not app._quitting and not s.stop.aborted
        assert not app.fresh_asked  # Escape on the resume offer resumes: it never wipes anything
        if cls is not QuitScreen:
            assert _what_was_done(app, sb) == before, f"Escape on the {dialog} dialog did something"
