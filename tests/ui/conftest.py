"""UI fixtures: the demo app on a fresh sandbox, a journal folder per test, and a way to wait for quiet."""

from __future__ import annotations

import re
import time

import pytest
from helpers import until

from screens.demo import demo_app


@pytest.fixture(autouse=True)
def journal_home(tmp_path, monkeypatch):
    """Each test keeps its journal (XDG state) in its own folder."""
    state = tmp_path / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


def stable(sb):
    """A screen filter that hides what changes from run to run: the ports, the secret fingerprints, and the random
    name in Traefik's default certificate (as Traefik, the sandbox makes one per start)."""
    port, public = str(sb.api.port), str(sb.opts.public_port)

    def shown(text: str) -> str:
        text = text.replace(f"127.0.0.1:{port}", "127.0.0.1:6443").replace(f".test:{public}", ".test:8443")
        text = re.sub(r"\b[0-9a-f]{32}\.[0-9a-f]{32}\.traefik\.default\b", "….traefik.default", text)
        return re.sub(r"sha256:[0-9a-f]{12}", "sha256:…", text)
    return shown


@pytest.fixture
def wizard(make_sandbox, tmp_path):
    """``wizard(**sandbox_options)`` → (app, sandbox): the demo app, blink off, exports into tmp_path;
    ``prepare(sb)`` runs on the sandbox before the app is made (a headless apply, say)."""
    def make(*, audit: bool = False, node_timeout: float = 30.0, app_kw: dict | None = None, prepare=None,
             **overrides):
        sb = make_sandbox(**overrides)
        if prepare is not None:
            prepare(sb)
        app = demo_app(sb, audit=audit, node_timeout=node_timeout, blink=False, export_dir=tmp_path / "export",
                       shown=stable(sb), log_clock=lambda t: "--:--:--", **(app_kw or {}))
        return app, sb
    return make


def _drawn(app) -> bool:
    """Nothing buffered for the screen: no engine event or watch change waiting, the node table sized.
    (DataTable sizes new rows' columns on idle: a screenshot before that shows truncated cells.)"""
    panel = app.query_one("#cluster")
    table = panel.query_one("#nodes")
    return (not app.events._scheduled and not panel.coalescer._scheduled and not table._require_update_dimensions
            and not table._new_rows and not table._updated_cells)


async def _settle(pilot, timeout: float = 60.0, pods: bool = True) -> None:
    """Wait until no stage is busy, the workers are done, the live panel has its nodes and the screen caught up.
    A worker a key just started counts until it has finished (a pending one has not set its stage busy yet);
    quiet must hold across one more round of pending messages, as a step's callback may start the next."""
    app = pilot.app
    deadline = time.monotonic() + timeout

    def busy() -> bool:
        return app._busy() or any(not w.is_finished for w in app.workers if w.group == "engine")

    def quiet() -> bool:
        panel = app.query_one("#cluster")
        return not busy() and bool(panel.nodes) and _drawn(app) and (not pods or not panel.pods)

    def why() -> str:
        return (f"the wizard settled: busy={busy()}, stages={[s.busy for s in app.session.states]}, "
                f"pods={list(app.query_one('#cluster').pods)}")
    while True:
        await until(pilot, quiet, what=why, timeout=max(0.0, deadline - time.monotonic()))
        await pilot.pause()
        if quiet():
            return


async def _steady(pilot, timeout: float = 30.0, gap: float = 0.3) -> None:
    """Everything drawn, and the screen reads the same across ``gap`` seconds: no watch event (a Ready flip, a
    reconnect) is being drawn while a snapshot is taken. Busy stages are allowed (a view may pin one busy)."""
    app = pilot.app
    deadline = time.monotonic() + timeout
    last = None
    while True:
        await pilot.wait_for_scheduled_animations()
        now = _screen_text(app) if _drawn(app) else None
        if now is not None and now == last:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the screen kept changing for {timeout} s")
        last = now
        await pilot.pause(gap)  # the interval the screen must stay the same across: the check itself


def _screen_text(app) -> str:
    """What a person would read on the screen now: the composited screen (modals over it) as plain text."""
    import io

    from rich.console import Console
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True,
                      legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


@pytest.fixture
def settle():
    """``await settle(pilot)``: wait until the wizard is quiet."""
    return _settle


@pytest.fixture
def steady():
    """``await steady(pilot)``: wait until the wizard is quiet and its screen unchanged."""
    return _steady


@pytest.fixture
def screen_text():
    """``screen_text(app)``: the screen's text, as a person reads it."""
    return _screen_text
