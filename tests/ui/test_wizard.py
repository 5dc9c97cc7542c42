"""The wizard driven with Textual's Pilot, on the sandbox, as an operator would: keys, screens, outcomes."""

from __future__ import annotations

import dataclasses
import json

from helpers import mutating_requests, sandbox_state, until
from textual.widgets import Button, DataTable

from sandbox.containerd import REGISTRIES_PATH
from screens.app import INTERRUPTED, finish
from screens.modals.authflow import AuthFlowScreen
from screens.modals.help import HelpScreen
from screens.modals.override import OverrideScreen
from screens.modals.quit import QuitScreen
from screens.modals.report import ReportScreen
from screens.modals.resume import ResumeScreen
from screens.widgets.rollout import RolloutView
from wizard.credentials import Secret


async def drive(pilot, settle, *, until: str | None = None, screens: list | None = None, screen_text=None) -> None:
    """Apply and Next through the stages (stopping at the stage ``until``), as an operator presses keys."""
    s = pilot.app.session
    while not s.complete:
        await settle(pilot)
        st = s.states[s.current]
        if st.key == until:
            return
        if st.changes and not st.applied:
            await pilot.press("a")
            await settle(pilot)
        assert s.can_advance(), f"{st.title}: Next closed: {s.next_reason()}"
        if screens is not None:
            screens.append(screen_text(pilot.app))
        await pilot.press("n")
    await settle(pilot)


async def wait_restarting(pilot, node: str | None = None) -> None:
    """Until ``node``'s restart (any node's, without one) is under way: restarting or waiting for its proofs."""
    s = pilot.app.session

    def under_way() -> bool:
        phases = [s.node_phases.get(node)] if node else list(s.node_phases.values())
        return any(p and p.phase in ("restarting", "waiting") for p in phases)
    await until(pilot, under_way, what=f"{node or 'a node'} restarting", timeout=60)


async def wait_resume_offer(pilot, screen_text, what: str = "a resume offer") -> str:
    """Until the wizard offers to resume an unfinished migration: its ResumeScreen up and drawn; its text."""
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, ResumeScreen), what=what, timeout=60)
    await until(pilot, lambda: "Unfinished migration" in screen_text(app), what=f"{what}: its text drawn")
    return screen_text(app)


def said(app, prefix: str) -> bool:
    """A notification starting with ``prefix`` was shown."""
    return any(n.message.startswith(prefix) for n in app._notifications)


def restarts(sb) -> dict[str, int]:
    return {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()}


async def test_demo_runs_every_stage_to_a_finished_migration(wizard, settle, screen_text, tmp_path, journal_home):
    app, sb = wizard()
    token = sb.token_file.read_text().strip()
    screens: list[str] = []
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        first = screen_text(app)
        assert "Preflight" in first and "dellmini1" in first and "lenovomini" in first
        assert app.query_one("#next", Button).disabled is False
        await drive(pilot, settle, screens=screens, screen_text=screen_text)
        assert app.session.complete
        assert isinstance(app.screen, ReportScreen)
        report = screen_text(app)
        assert "Verify" in report and "Overrides: none" in report
        await pilot.press("e")
        await until(pilot, lambda: len(app.exported) == 2, what="e exports the report as JSON and Markdown")
        await settle(pilot)
        log = "\n".join(app.log_lines)
        assert "restarted and proven" in log
        screens.append(screen_text(app))
    # the cluster is migrated: every node restarted once and loaded the merged registries.yaml
    state = sandbox_state(sb)
    assert restarts(sb) == dict.fromkeys(state["nodes"], 1)
    for name, node in state["nodes"].items():
        assert node["loaded_registries"] == node["files"][REGISTRIES_PATH], name
    assert not [p for p in state["pods"] if "ghcr2gitea.io/role" in (p.get("labels") or {}) and not p["deleted"]]
    # the journal says finished, the report was exported, and the token was never on screen or on disk
    journals = list((journal_home / "ghcr2gitea").glob("*.json"))
    assert journals and json.loads(journals[0].read_text())["finished"]
    exported = sorted((tmp_path / "export").glob("ghcr2gitea-report-*"))
    assert [p.suffix for p in exported] == [".json", ".md"]
    assert json.loads(exported[0].read_text())["stages"][9]["status"] == "pass"
    # the Markdown report lists the rollout's guards and, per node, each proof by name
    md = exported[1].read_text()
    assert "Guards before each node: node exists, quorum." in md, md
    assert "| Node | Phase | restart started | unit restarted | heartbeat | kubelet Starting event | Ready | " \
           "containerd config |" in md, md
    assert all(f"| {n} | done | " + " | ".join(["✓"] * 6) + " |" in md for n in state["nodes"]), md
    for text in [*screens, log, *(p.read_text() for p in exported), journals[0].read_text()]:
        assert token not in text


async def test_next_is_disabled_while_a_check_fails_and_an_override_is_typed_and_recorded(
        wizard, settle, screen_text, journal_home):
    app, sb = wizard()
    app.session.ctx.token = Secret("not-the-token-" + "x" * 20)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        s = app.session
        assert s.current == 1 and s.states[1].key == "credentials"
        nxt = app.query_one("#next", Button)
        assert nxt.disabled, "Next must be closed while the token check fails"
        assert app.check_action("next", ()) is None  # shown, disabled, in the footer
        text = screen_text(app)
        assert "token accepted by Gitea" in text and "FAIL" in text
        await pilot.press("n")  # does nothing but say why
        await settle(pilot)
        assert s.current == 1
        assert said(app, "Next is closed: 1 gating check(s) fail: token accepted by Gitea"), \
            [n.message for n in app._notifications]
        await pilot.press("a")  # nothing to apply here: says so, and why Next is closed
        await until(pilot, lambda: said(app, "nothing to apply: the cluster already matches the plan"),
                    what=lambda: f"a saying there is nothing to apply: {[n.message for n in app._notifications]}")
        # the auth flow view shows the hops, with the diagnosis
        await pilot.press("f")
        await until(pilot, lambda: isinstance(app.screen, AuthFlowScreen), what="f opens the auth flow")
        await until(pilot, lambda: "diagnosis" in screen_text(app), what="the auth flow's diagnosis on screen")
        flow = screen_text(app)
        assert "401" in flow
        await pilot.press("escape")
        # override: a wrong word is refused, the stage key is accepted
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, OverrideScreen), what="o opens the override dialog")
        await pilot.press(*"yes", "enter")
        await until(pilot, lambda: "type credentials (or Credentials) exactly" in screen_text(app),
                    what="a wrong word refused, saying what to type")
        assert isinstance(app.screen, OverrideScreen)
        app.screen.query_one("Input").value = ""
        await pilot.press(*"credentials", "enter")
        await settle(pilot)
        assert [o.check for o in s.overrides] == ["token accepted by Gitea"]
        assert s.can_advance() and not nxt.disabled
        assert "overridden: token accepted by Gitea" in screen_text(app)
        await pilot.press("n")
        await settle(pilot)
        assert s.current == 2
        await pilot.press("a")  # the first write: from here the journal is kept on disk
        await settle(pilot)
    journal = json.loads(next((journal_home / "ghcr2gitea").glob("*.json")).read_text())
    overrides = [e for e in journal["events"] if e["type"] == "override"]
    assert overrides and overrides[0]["check"] == "token accepted by Gitea" and overrides[0]["typed"] == "credentials"
    report = json.loads(s.render_report("json"))
    assert report["overrides"][0]["stage"] == "credentials"
    assert "not-the-token" not in json.dumps(journal)


async def test_next_opens_only_once_the_stage_has_settled_after_apply(wizard, settle):
    """Apply is followed by verify, inspect and plan: Next (and the gate line "all gating checks pass") must not
    flash open between those steps, or an operator's n in that moment is refused by a stage that looked done."""
    app, sb = wizard()
    s = app.session
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="secrets")
        i = s.current
        assert s.states[i].changes and not s.can_advance(i)
        seen: list[tuple[str, bool]] = []
        shown = s.on_stage

        def spy(j: int) -> None:  # every repaint of the stage, as the screen is told of it
            if j == i:
                seen.append((s.states[i].busy, s.can_advance(i)))
            shown(j)
        s.on_stage = spy
        await pilot.press("a")
        await settle(pilot)
        assert s.can_advance(i), s.next_reason(i)
        opened = next(k for k, (_, ok) in enumerate(seen) if ok)
        assert [busy for busy, _ in seen[opened:] if busy] == [], seen
        assert {"applying", "verifying"} <= {busy for busy, _ in seen[:opened]}, seen


async def test_an_override_passes_over_a_failed_check_never_over_unapplied_changes(
        wizard, settle, screen_text, tmp_path):
    app, sb = wizard()
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "app.yaml").write_text("spec: [\n")  # a later stage's precheck fails on it
    s = app.session
    s.ctx.plan = dataclasses.replace(s.ctx.plan, manifests=(str(tmp_path / "k8s"),))
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="secrets")
        i = s.current
        st = s.states[i]
        assert st.changes
        await pilot.press("a")
        await settle(pilot)
        assert st.error is not None and st.error.name == "Workloads: manifest files parse"
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, OverrideScreen), what="o opens the override dialog")
        app.screen.query_one("Input").value = "registry  SECRETS"  # its title is accepted as its key, in any case
        await pilot.press("enter")
        await settle(pilot)
        assert [o.check for o in s.overrides] == ["Workloads: manifest files parse"]
        # the override passed over the check, not over the changes: no Secret exists, Next stays closed
        assert not [r for r in mutating_requests(sb) if "/secrets" in r]
        assert st.changes and not st.applied and not s.can_advance()
        await pilot.press("n")
        await settle(pilot)
        assert s.current == i and not st.done
        text = screen_text(app)
        assert "overridden: Workloads: manifest files parse" in text
        assert "✓  3 Registry secrets" not in text and "change(s) to apply first" in text
        # Apply now writes the Secrets (the overridden precheck is passed over); Next opens; the mark stays
        await pilot.press("a")
        await settle(pilot)
        assert [r for r in mutating_requests(sb) if "/secrets" in r]
        assert s.can_advance(), s.next_reason()
        await pilot.press("n")
        await settle(pilot)
        assert st.done and s.status(i) == "overridden"
        text = screen_text(app)
        assert "⚠  3 Registry secrets" in text and "✓  3 Registry secrets" not in text
    report = s.render_report("markdown")
    assert "| secrets | Workloads: manifest files parse |" in report and s.overrides[0].by in report


async def test_a_node_that_never_returns_is_shown_failed_and_the_rollout_stops(wizard, settle, screen_text):
    app, sb = wizard(never_returns={"dellmini3"}, restart_seconds=(0.3, 0.3), node_timeout=4)
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="restart")
        await pilot.press("a")
        await settle(pilot, pods=False)
        s = app.session
        st = s.states[s.current]
        assert st.key == "restart" and st.error is not None and "dellmini3" in st.error.name
        assert app.query_one("#next", Button).disabled
        rollout = app.query_one(RolloutView)
        phases = {n: p.phase for n, p in rollout.runs.items()}
        assert phases == {"dellmini1": "done", "dellmini3": "failed", "dellmini5": "skipped", "dellmini2": "skipped",
                          "lenovomini": "skipped"}
        app.query_one("#tabs").active = "tab-rollout"
        await until(pilot, lambda: "down: dellmini3" in screen_text(app),
                    what="the rollout tab drawn, with dellmini3 down")
        text = screen_text(app)
        assert "not proven:" in text and "unit restarted" in text
        assert "failed" in text and "down: dellmini3" in text
        assert s.status(s.current) == "failed"
    assert [restarts(sb)[n] for n in ("dellmini1", "dellmini3", "dellmini5", "dellmini2", "lenovomini")] == \
        [1, 1, 0, 0, 0]


async def test_pause_finishes_the_current_node_then_stops_and_apply_continues(wizard, settle, screen_text):
    app, sb = wizard(restart_seconds=(1.0, 1.0))
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="restart")
        s = app.session
        await pilot.press("a")
        await wait_restarting(pilot, "dellmini1")
        assert app.check_action("pause", ()) is True
        await pilot.press("p")
        await settle(pilot, pods=False)
        st = s.states[s.current]
        done = [n for n, c in restarts(sb).items() if c]
        assert done == ["dellmini1"]
        # paused is its own state, not a failure: no ✗, no failed check, the line says what is left
        assert st.paused and st.error is None and s.status(s.current) == "paused"
        assert not s.can_advance()
        text = screen_text(app)
        assert "paused after dellmini1; 4 nodes left — Apply resumes" in text
        assert "✗  8 Rolling restart" not in text and "‖  8 Rolling restart" in text and "✗1" not in text
        assert [c.target.split(":")[0] for c in st.changes] == ["node dellmini3", "node dellmini5", "node dellmini2",
                                                               "node lenovomini"]
        await pilot.press("a")  # continue with the rest
        await settle(pilot)
        assert s.can_advance(), s.next_reason()
    assert set(restarts(sb).values()) == {1}


async def test_a_server_held_by_the_quorum_guard_shows_why_and_pause_stops_before_it(wizard, settle, screen_text):
    # the API node's port opens long before its /readyz is ok: the next server waits, held by the quorum guard
    app, sb = wizard(servers=2, agents=0, restart_seconds=(0.3, 0.3), readyz_lag_seconds=60.0)
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="restart")
        s = app.session
        await pilot.press("a")
        rollout = app.query_one(RolloutView)
        await until(pilot, lambda: getattr(rollout.runs.get("server2"), "phase", "") == "held", timeout=60,
                    what=lambda: f"server2 held by the quorum guard: {[(n, p.phase) for n, p in rollout.runs.items()]}")
        app.query_one("#tabs").active = "tab-rollout"
        await until(pilot, lambda: "waiting: the API not ready (quorum" in screen_text(app),
                    what="the rollout tab painted with server2's wait reason")
        text = screen_text(app)
        assert "held" in text, text
        await pilot.press("p")
        await settle(pilot, pods=False)
        st = s.states[s.current]
        assert st.paused and st.error is None, st.error
        assert [c.target.split(":")[0] for c in st.changes] == ["node server2"]
    assert restarts(sb) == {"dellmini1": 1, "server2": 0}  # held, then paused: never touched


async def test_quit_while_applying_asks_says_what_finishes_first_and_how_to_resume(wizard, settle, screen_text,
                                                                                   capsys):
    app, sb = wizard(restart_seconds=(1.0, 1.0), app_kw={"resume_command": "ghcr2gitea demo --dir sb"})
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="restart")
        await pilot.press("a")
        await wait_restarting(pilot, "dellmini1")
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="q while applying asks first")
        await until(pilot, lambda: "is being applied" in screen_text(app), what="the quit dialog drawn")
        text = screen_text(app)
        assert "Rolling restart is being applied" in text and "dellmini1 is restarting now" in text
        await pilot.press("n")  # stay: nothing happens
        await until(pilot, lambda: not isinstance(app.screen, QuitScreen), what="n closes the quit dialog")
        assert app.return_code is None
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="q asks again")
        await pilot.press("y")
        await until(pilot, lambda: app.return_code is not None, timeout=60,
                    what="y quits once the current node is done")
    assert app.return_code == INTERRUPTED
    assert finish(app) == INTERRUPTED
    err = capsys.readouterr().err
    assert "quit while applying Rolling restart" in err and "to resume, run `ghcr2gitea demo --dir sb` again" in err
    assert len(err.strip().splitlines()) == 1
    assert sum(restarts(sb).values()) < 5  # it stopped: the last nodes were never touched


async def test_help_lists_the_keys_of_the_screen_and_escape_closes_it(wizard, settle, screen_text):
    app, sb = wizard()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        base = app.screen_stack[0]
        for key in ("question_mark", "f1"):
            await pilot.press(key)
            await until(pilot, lambda: isinstance(app.screen, HelpScreen), what=f"{key} opens the help")
            await until(pilot, lambda: "Override a failed check" in screen_text(app), what="the help drawn")
            text = screen_text(app)
            for b in app.BINDINGS:  # every binding of the wizard, with its name
                if b.show or b.action in ("adopt", "toggle_cluster", "toggle_dark"):
                    assert app.ACTIONS_HELP[b.action][0] in text, b.action
            assert "Re-check" in text and "Override a failed check" in text and "Pass over a failed" in text
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is base, what="escape closes the help")
        # over a dialog: the dialog's own keys; Escape closes the help, then the dialog
        app.action_report()
        await until(pilot, lambda: isinstance(app.screen, ReportScreen), what="the report opens")
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="? over the report opens the help")
        await until(pilot, lambda: "Export JSON + Markdown" in screen_text(app), what="the report's keys in the help")
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ReportScreen), what="escape closes only the help")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is base, what="escape closes the report")


async def test_help_open_during_the_restart_does_not_stop_the_progress(wizard, settle):
    """The engine keeps reporting while a dialog is up; the rollout under it stays current."""
    app, sb = wizard(restart_seconds=(0.3, 0.3))
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="restart")
        await pilot.press("a")
        await wait_restarting(pilot)
        await pilot.press("question_mark")
        s = app.session
        # the help stays open while every node restarts
        await until(pilot, lambda: not s.states[s.current].busy, timeout=60, what="the rollout finished")
        assert isinstance(app.screen, HelpScreen)
        assert set(restarts(sb).values()) == {1}, restarts(sb)
        await pilot.press("escape")
        table = app.query_one("#rollout", DataTable)

        def phases() -> list[str]:
            return [str(table.get_cell(n, "phase")).lower() for n in table.rows]
        await until(pilot, lambda: len(phases()) == 5 and all("done" in p or "ready" in p for p in phases()),
                    what=lambda: f"every rollout row done once the help closes: {phases()}")


async def test_progress_arriving_while_the_app_shuts_down_is_dropped(wizard, settle):
    """The engine's last lines can land after the screens are gone (CI saw NoMatches here)."""
    from wizard.stages.base import Progress
    app, sb = wizard()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
    app.events.put(("node", "dellmini1"), Progress("restart", "late", "dellmini1", "waiting", {}, 0.0, 1.0))
    app.events.put(("stage", 0), Progress("preflight", "late", None, None, {}, 0.0, 1.0))
    app.events._deliver()  # what the coalescer's timer does; it must not raise


async def test_the_rollout_row_moves_while_a_node_restarts(wizard, settle, screen_text):
    from wizard.restart import PROOFS
    from wizard.stages.base import Progress
    app, sb = wizard()
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="restart")
        s = app.session
        view = app.query_one(RolloutView)
        now = [100.0]
        view.clock = lambda: now[0]
        app.query_one("#tabs").active = "tab-rollout"
        got = {k: i < 2 for i, k in enumerate(PROOFS)}  # restart started, unit restarted
        s._progress(Progress("restart", "dellmini1: waiting for heartbeat, kubelet Starting event, Ready",
                             "dellmini1", "waiting", got, 0.0, 4.2))  # as the engine reports it
        table = app.query_one("#rollout", DataTable)
        await until(pilot, lambda: "dellmini1" in table.rows, what="dellmini1's rollout row")
        assert str(table.get_cell("dellmini1", "elapsed")) == "4.2 s"
        now[0] += 3  # three seconds without a word from the engine: the row still moves
        await until(pilot, lambda: str(table.get_cell("dellmini1", "elapsed")) == "7.2 s",
                    what=lambda: f"the row's elapsed moving to 7.2 s: {table.get_cell('dellmini1', 'elapsed')}")
        await until(pilot, lambda: "7.2 s" in screen_text(app), what="the moved row drawn")
        text = screen_text(app)
        assert "waiting for heartbeat, kubelet Starting event" in text  # the wait reason, on the row
        assert "✓start ✓unit ·beat" in text  # each proof lights as it is proven
        # one count of the servers up: the cluster panel and the quorum guard agree while dellmini1 restarts
        assert text.count("2/3 servers up") == 2, text


async def test_abort_stops_at_the_next_safe_point_and_apply_continues(wizard, settle):
    app, sb = wizard(restart_seconds=(1.0, 1.0))
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="restart")
        s = app.session
        await pilot.press("a")
        await wait_restarting(pilot)
        await pilot.press("x")
        await settle(pilot, pods=False)
        st = s.states[s.current]
        assert st.error is not None and st.error.cause == "aborted by the operator"
        assert app.query_one("#next", Button).disabled
        assert sum(restarts(sb).values()) < 5  # the rollout stopped: the last nodes were never touched
        await pilot.press("a")
        await settle(pilot)
        assert s.can_advance(), s.next_reason()
    assert set(restarts(sb).values()) == {1}


async def test_resume_after_the_app_is_closed_mid_restart(wizard, settle, screen_text, make_sandbox):
    app, sb = wizard(restart_seconds=(0.8, 0.8))
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="restart")
        await pilot.press("a")
        await wait_restarting(pilot, "dellmini3")
    # the app is gone mid-restart; a new one on the same cluster offers to resume
    from screens.demo import demo_app
    app2 = demo_app(sb, node_timeout=30, blink=False)
    async with app2.run_test(size=(120, 36)) as pilot:
        offer = await wait_resume_offer(pilot, screen_text)
        assert "Unfinished migration" in offer and "stopped in: Rolling restart" in offer
        assert "done: Preflight, Credentials, Registry secrets" in offer and "started " in offer
        await pilot.press("r")
        await settle(pilot, pods=False)
        s2 = app2.session
        assert s2.states[s2.current].key == "restart"
        assert all(st.done for st in s2.states[:s2.current])
        await drive(pilot, settle)
        assert s2.complete
    assert set(restarts(sb).values()) == {1}, restarts(sb)


async def test_a_second_wizard_is_told_who_holds_the_cluster(wizard, settle, screen_text):
    from wizard.cluster import Cluster
    from wizard.lock import ClusterLock
    app, sb = wizard()
    other = Cluster.connect(str(sb.kubeconfig))
    lock = ClusterLock(other)
    lock.me = "alice@laptop pid=1"
    lock.acquire()
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(pilot)
            await pilot.press("n")
            await settle(pilot)
            await pilot.press("n")
            await settle(pilot)
            await pilot.press("a")
            await settle(pilot)
            st = app.session.states[2]
            assert st.error is not None and st.error.name == "cluster lock"
            assert "alice@laptop" in screen_text(app)
            assert app.query_one("#next", Button).disabled
    finally:
        lock.release()
        other.close()
    assert not [m for m in mutating_requests(sb) if "/secrets" in m]


async def test_audit_mode_is_read_only_and_offers_no_apply(wizard, settle, screen_text, tmp_path):
    app, sb = wizard(audit=True)
    before = mutating_requests(sb)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "AUDIT — read-only" in text
        assert not app.query("#apply") and not app.query("#next")
        assert app.check_action("apply", ()) is False and app.check_action("next", ()) is False
        assert "Apply" not in text.split("e exports the report.")[1]
        s = app.session
        assert all(st.checks is not None for st in s.states)  # every stage verified
        statuses = [s.status(i) for i in range(s.stage_count)]
        assert statuses[0] == "done" and "failed" in statuses
        await pilot.press("a")  # no Apply: nothing happens
        await pilot.press("down", "enter")  # any stage can be looked at
        await until(pilot, lambda: app.viewing == 1, what="down, enter opens the second stage")
        await pilot.press("e")
        await until(pilot, lambda: len(app.exported) == 2, what="e exports the audit as JSON and Markdown")
    assert mutating_requests(sb) == before
    json_file, md_file = sorted((tmp_path / "export").glob("ghcr2gitea-audit-*"))
    report = json.loads(json_file.read_text())
    assert report["mode"] == "audit" and len(report["stages"]) == 11
    assert md_file.read_text().startswith("# ghcr2gitea audit")


async def test_every_action_has_a_command_palette_entry_and_small_screens_work(wizard, settle, screen_text):
    app, sb = wizard()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for action, (title, _) in app.ACTIONS_HELP.items():
            assert title in titles or action == "quit", action
        text = screen_text(app)
        assert "Preflight" in text and "dellmini1" in text
        await pilot.press("l")
        assert app.query_one("#log").display
        await pilot.press("d")
        assert app.theme == "textual-light"
    app2, _ = wizard()
    async with app2.run_test(size=(200, 60)) as pilot:
        await settle(pilot)
        text = screen_text(app2)
        assert "lenovomini" in text and "cluster reachable" in text


async def test_the_live_panel_follows_the_watch_and_coalesces_a_burst(wizard, settle):
    from wizard.kube import NodeInfo
    app, sb = wizard()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        panel = app.query_one("#cluster")
        flushes = panel.coalescer.flushes
        burst = [NodeInfo(f"burst{i:04d}", "agent", "True" if i % 2 else "False", "v1.33.5+k3s1", "10.0.0.1")
                 for i in range(1000)]
        for n in burst:  # one event at a time, as a watch delivers them
            panel.nodes_changed([n], [])
        await settle(pilot)
        table = panel.query_one("#nodes", DataTable)
        assert table.row_count == 1005
        assert panel.coalescer.flushes - flushes < 20, "1000 events must not cost 1000 redraws"


async def test_the_cluster_panel_says_written_for_node_files_this_run_wrote(wizard, settle):
    """Between Node registries and the restart: each node's file is "written" (by this run), not just
    "needs restart" — the stage says so on the progress stream (Progress.wrote), not in a message to parse."""
    app, sb = wizard()
    async with app.run_test(size=(120, 36)) as pilot:
        await drive(pilot, settle, until="restart")
        s = app.session
        assert s.written == set(sandbox_state(sb)["nodes"])
        assert set(s.registries_states().values()) == {"written"}, s.registries_states()


async def test_the_images_stage_shows_a_bar_per_image_with_bytes_and_blobs_while_it_copies(wizard, settle, screen_text):
    from screens.widgets.copies import CopiesView, CopyRow
    app, sb = wizard()
    ghcr = sb.cluster.ghcr
    size = sb.opts.ghcr_layer_size
    base = {d for r in ghcr.repos.values() for d, data in r.blobs.items() if len(data) == size}
    held = [ghcr.hold(d) for d in base]  # the shared base layers: the copy stays under way until released
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            await drive(pilot, settle, until="images")
            s = app.session
            st = s.states[s.current]
            images = len(st.changes)
            assert images, "Gitea starts empty: stage Images has images to copy"
            await pilot.press("a")
            view = app.query_one(CopiesView)

            def moving() -> list[CopyRow]:
                rows = [r for r in view.query(CopyRow) if r.is_mounted]
                return [r for r in rows if 0 < r.p.bytes_done < r.p.bytes_total and r.p.blobs_done < r.p.blobs_total]
            rows = await until(pilot, moving, what="a bar with bytes copied and blobs still to go", timeout=30)
            assert st.busy == "applying"
            row = rows[0]
            bar = row.query_one("ProgressBar")
            assert 0 < bar.progress < bar.total == row.p.bytes_total
            await until(pilot, lambda: f"{row.p.blobs_done}/{row.p.blobs_total} blobs" in screen_text(app),
                        what=lambda: f"the image's bytes and blobs drawn next to its bar:\n{screen_text(app)}")
            assert row.p.image.split("/", 1)[1] in screen_text(app)  # which image: its repository
            for ev in held:
                ev.set()
            await settle(pilot)
            assert st.applied and not st.busy
            done = list(view.query(CopyRow))
            assert len(done) == images  # one bar per image copied
            assert all(r.p.bytes_done == r.p.bytes_total and r.p.blobs_done == r.p.blobs_total for r in done)
            assert all(r.query_one("ProgressBar").percentage == 1 for r in done)
    finally:
        for ev in held:
            ev.set()
