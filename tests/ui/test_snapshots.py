"""Snapshots of every screen at 80×24 and 120×36 (accept new baselines with ``pytest --snapshot-update``).

Deterministic: a fixed sandbox seed, the random ports and the secret fingerprints filtered, no clock in the log, no cursor blink, toasts cleared; the rolling restart, auth flow
and resume views are fed fixed data through the same paths the engine uses.
"""

from __future__ import annotations

import pytest
from helpers import until

from screens.app import WizardApp
from screens.modals.authflow import AuthFlowScreen
from screens.modals.help import HelpScreen
from screens.modals.override import OverrideScreen
from screens.modals.quit import QuitScreen
from screens.modals.report import ReportScreen
from screens.modals.resume import ResumeScreen
from screens.widgets.rollout import RolloutView
from wizard.credentials import Secret
from wizard.restart import PROOFS
from wizard.session import ResumeOffer
from wizard.stages.base import Check, Progress

from .test_keyboard import _view
from .test_wizard import wait_restarting

PORT = 8443  # what the screen filter shows for the sandbox's (random) public HTTPS port
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]


@pytest.fixture
def shot(wizard, settle, steady, snap_compare):
    """``shot(size, before=async fn(pilot, app, sb), **wizard options)`` → the snapshot matches."""
    def take(size, before=None, **options):
        app, sb = wizard(**options)
        # no animation: a tab's underline caught mid-slide made a snapshot differ by one frame (CI, loaded)
        app.animation_level = "none"

        async def run_before(pilot):
            await settle(pilot)
            if before is not None:
                await before(pilot, app, sb)
            app.clear_notifications()
            # a tab underline still sliding, or the live panel drawing a watch event, is not the screen
            # (CI, loaded: one 80x24 diff differed from its baseline once)
            await steady(pilot)
        return snap_compare(app, terminal_size=size, run_before=run_before)
    return take


async def _next(pilot, settle, times=1):
    for _ in range(times):
        await pilot.press("n")
        await settle(pilot)


async def _drive_to(pilot, settle, key):
    s = pilot.app.session
    while s.states[s.current].key != key:
        if s.states[s.current].changes and not s.states[s.current].applied:
            await pilot.press("a")
            await settle(pilot)
        await _next(pilot, settle)


@pytest.mark.parametrize("size", SIZES)
def test_preflight(shot, size):
    assert shot(size)


@pytest.mark.parametrize("size", SIZES)
def test_preflight_light_theme(shot, size):
    async def before(pilot, app, sb):
        await pilot.press("d")
    assert shot(size, before)


@pytest.mark.parametrize("size", SIZES)
def test_changes_as_a_masked_diff(shot, settle, size):
    async def before(pilot, app, sb):
        await _next(pilot, settle, 2)
    assert shot(size, before)


@pytest.mark.parametrize("size", SIZES)
def test_failing_check_closes_next(shot, settle, size):
    async def before(pilot, app, sb):
        app.session.ctx.token = Secret("a-wrong-token-" + "x" * 20)
        await _next(pilot, settle)
    assert shot(size, before)


@pytest.mark.parametrize("size", SIZES)
def test_override_confirmation(shot, settle, size):
    async def before(pilot, app, sb):
        app.session.ctx.token = Secret("a-wrong-token-" + "x" * 20)
        await _next(pilot, settle)
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, OverrideScreen), what="o opens the override dialog")
        await pilot.press(*"cred")
    assert shot(size, before)


@pytest.mark.parametrize("size", SIZES)
def test_log_pane(shot, settle, size):
    async def before(pilot, app, sb):
        await _drive_to(pilot, settle, "proxy")
        await pilot.press("l")
    assert shot(size, before)


async def _restarting(pilot, app, settle):
    """The Rolling restart stage under way, fed fixed node progress through the engine's path: dellmini1 done,
    dellmini3 waiting for its proofs, three queued."""
    await _drive_to(pilot, settle, "restart")
    s = app.session
    st = s.states[s.current]
    st.busy = "applying"  # as while the rollout runs: Pause and Abort offered
    app.query_one("#tabs").active = "tab-rollout"
    app.query_one(RolloutView).clock = lambda: 1000.0  # Elapsed ticks with the clock: pin it
    proofs = dict.fromkeys(PROOFS, False)
    steps = [("dellmini1", "done", 6, 9.4, "dellmini1: restarted and proven in 9.4 s"),
             ("dellmini3", "waiting", 3, 4.2, "dellmini3: waiting for kubelet Starting event, Ready, "
                                              "containerd config"),
             ("dellmini5", "queued", 0, 0.0, "dellmini5: queued"),
             ("dellmini2", "queued", 0, 0.0, "dellmini2: queued"),
             ("lenovomini", "queued", 0, 0.0, "lenovomini: queued")]
    for node, phase, n, elapsed, message in steps:
        got = {k: i < n for i, k in enumerate(proofs)}
        s._progress(Progress("restart", message, node, phase, got, 0.0, elapsed))  # as the engine reports
    view = app.query_one(RolloutView)
    await until(pilot, lambda: set(view.runs) == {n for n, *_ in steps} and not app.events._scheduled,
                what="the five nodes' progress delivered to the rollout view")
    s._changed(s.current)  # then the stage repaints, as after the engine's step (steady waits for it drawn)


@pytest.mark.parametrize("size", SIZES)
def test_rolling_restart_view(shot, settle, size):
    async def before(pilot, app, sb):
        await _restarting(pilot, app, settle)
    assert shot(size, before)


@pytest.mark.parametrize("size", SIZES)
def test_quit_while_applying_asks_first(shot, settle, size):
    async def before(pilot, app, sb):
        await _restarting(pilot, app, settle)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="q mid-restart asks first")
    assert shot(size, before)


HOPS = [
    {"step": "registry /v2/ anonymous", "request": f"GET https://registry.example.test:{PORT}/v2/", "status": 401,
     "ms": 12.0, "headers": {"www-authenticate": f'Bearer realm="https://gitea.k3s.example.test:{PORT}/v2/token",'
                                                 'service="container_registry"'},
     "error": "", "tls": "verified against the plan's CA file (Example LAN CA)",
     "cert": "CN=registry.example.test, SAN registry.example.test, issuer Example LAN CA"},
    {"step": "realm token over HTTPS", "request": f"GET https://gitea.k3s.example.test:{PORT}/v2/token",
     "status": 404, "ms": 8.0, "headers": {"content-type": "text/plain"}, "error": "",
     "tls": "not trusted: self-signed (TRAEFIK DEFAULT CERT), not for gitea.k3s.example.test",
     "cert": "CN=TRAEFIK DEFAULT CERT, SAN none, self-signed"},
]


@pytest.mark.parametrize("size", SIZES)
def test_auth_flow_view(shot, size):
    checks = [
        Check("realm answers a token over HTTPS", "fail", "the realm answered 404 over HTTPS: no TLS Ingress for "
              "the realm host", "apply stage HTTPS ingress", {"hops": HOPS}),
        Check("Kaniko's view: realm through the proxy", "pass", "", "",
              {"request": "GET https://gitea.k3s.example.test/v2/token via 10.43.12.7", "status": 200}),
        Check("dellmini1: pull-test pod pulls registry.example.test/jaybrto/gwa-webhook:latest", "pass", "", "",
              {"imageID": "registry.example.test/jaybrto/gwa-webhook@sha256:0f3a"}),
    ]

    async def before(pilot, app, sb):
        app.push_screen(AuthFlowScreen("Verify", checks, app.shown))
        await until(pilot, lambda: isinstance(app.screen, AuthFlowScreen), what="the auth flow view up")
    assert shot(size, before)


@pytest.mark.parametrize("size", SIZES)
def test_resume_offer(shot, size):
    offer = ResumeOffer(started=1_790_000_000.0, holder="alice@laptop pid=4242", stage="restart",
                        done=["preflight", "credentials", "secrets", "proxy", "ingress", "registries"],
                        nodes_proven=["dellmini1"], still_done=["preflight", "credentials", "secrets", "proxy",
                                                                "ingress", "registries"])

    async def before(pilot, app, sb):
        titles = {st.key: st.title for st in app.session.states}
        app.push_screen(ResumeScreen(offer, titles))
        await until(pilot, lambda: isinstance(app.screen, ResumeScreen), what="the resume offer up")
    assert shot(size, before)


@pytest.mark.parametrize("size", SIZES)
def test_report(shot, size):
    async def before(pilot, app, sb):
        app.push_screen(ReportScreen(app.session, "Report"))
        await until(pilot, lambda: isinstance(app.screen, ReportScreen), what="the report up")
    assert shot(size, before)


@pytest.mark.parametrize("size", SIZES)
def test_audit_mode(shot, size):
    assert shot(size, audit=True)


@pytest.mark.parametrize("size", SIZES)
def test_no_plan(snap_compare, size):
    assert snap_compare(WizardApp(None, subtitle="migrating current context", blink=False), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_help(shot, size):
    async def before(pilot, app, sb):
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="? opens the help")
    assert shot(size, before)


@pytest.mark.parametrize("size", SIZES)
def test_paused_rollout(shot, settle, size):
    # as test_pause_finishes_the_current_node_then_stops_and_apply_continues: p while dellmini1 restarts
    async def before(pilot, app, sb):
        await _drive_to(pilot, settle, "restart")
        await pilot.press("a")
        await wait_restarting(pilot, "dellmini1")
        await pilot.press("p")
        await settle(pilot, pods=False)
        assert app.session.status(app.session.current) == "paused"
        # the nodes left to restart; not the Rollout tab (its Elapsed is the real restart's: 1.0 s and the
        # scheduler's jitter) nor the Overview (what it found: the time dellmini1's k3s started again)
        app.query_one("#tabs").active = "tab-changes"
    assert shot(size, before, restart_seconds=(1.0, 1.0))


@pytest.mark.parametrize("size", SIZES)
def test_overridden_stage(shot, settle, size):
    # as test_next_is_disabled_while_a_check_fails_and_an_override_is_typed_and_recorded: Credentials overridden
    async def before(pilot, app, sb):
        app.session.ctx.token = Secret("a-wrong-token-" + "x" * 20)
        await _next(pilot, settle)
        await pilot.press("o")
        await until(pilot, lambda: isinstance(app.screen, OverrideScreen), what="o opens the override dialog")
        await pilot.press(*"credentials", "enter")
        await settle(pilot)
        await _next(pilot, settle)  # done, with the override: ⚠ in the list, never ✓
        await _view(pilot, "credentials")
    assert shot(size, before)


@pytest.mark.parametrize("size", SIZES)
def test_skip_verify_warning(shot, size):
    # as test_an_advisory_warning_is_said_on_the_stage_and_names_the_safer_option (node_tls: skip_verify)
    async def before(pilot, app, sb):
        await _view(pilot, "registries")
    assert shot(size, before, audit=True)


@pytest.mark.parametrize("size", SIZES)
def test_traefik_default_certificate_warning(shot, size):
    # as test_after_a_migration_the_ingress_stage_warns_of_traefiks_default_certificate: migrated headless first
    def migrate(sb):
        from helpers import run_cli
        res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
        assert res.returncode == 0, res.stdout + res.stderr

    async def before(pilot, app, sb):
        await _view(pilot, "ingress")
        # the warning's row highlighted: its detail (the certificate the realm serves) below the table
        checks = app.query_one("#checks-view").checks
        warn = next(i for i, c in enumerate(checks) if c.status == "warn")
        app.query_one("#tabs").active = "tab-checks"
        app.query_one("#checks").focus()
        await pilot.press(*["j"] * warn)
        await until(pilot, lambda: app.query_one("#checks-view").highlighted is checks[warn],
                    what="the warning's row highlighted")
    assert shot(size, before, audit=True, prepare=migrate, servers=1, agents=1)
