"""A day-two operation under way (token rotation, rollback): its rollout of node restarts, its lines, its end.

The operation itself is the engine's (a ``Session`` verb running the same function as the headless command);
this screen runs it in a thread worker and shows what it says. Every line passes ``shown``.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, RichLog, Static

from ..coalesce import Coalescer
from ..widgets.rollout import RolloutView
from .help import HELP_KEYS


class OperationScreen(Screen[int]):
    """Runs ``start()`` (a subclass's: the Session verb) and dismisses with its exit code once the operator closes
    the screen after it ended."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("x", "abort", "Abort")] + HELP_KEYS
    noun = "operation"  # "the rotation is running …"
    starting = ""  # the status line at the start
    restarting = ""  # the status line once nodes restart
    detail = ""  # the rollout view's line before any node moves

    def __init__(self, session, shown):
        super().__init__()
        self.session, self.shown = session, shown
        self.code: int | None = None  # None while the operation runs
        self.lines: list[str] = []  # what the log holds, as plain text
        self.events = Coalescer(self, self._flush)

    def start(self) -> tuple[int, str]:
        raise NotImplementedError

    def compose(self) -> ComposeResult:
        with Vertical(id="rotation"):
            yield Static(Text(self.starting, "bold cyan"), id="rotate-status")
            yield RolloutView(id="rotate-rollout")
            log = RichLog(id="rotate-log", wrap=True, markup=False, max_lines=2000)
            log.border_title = self.noun.capitalize()
            yield log
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.rollout = self.query_one(RolloutView)
        self.log_view = self.query_one("#rotate-log", RichLog)
        self.rollout.query_one("#rollout-detail", Static).update(self.detail)
        self._run()

    @on(Coalescer.Ready)
    def _coalesced(self, event: Coalescer.Ready) -> None:
        event.stop()
        event.coalescer.ready()

    def _flush(self, latest: dict, items: list) -> None:
        if not self.is_attached:
            return
        for text in items:
            line = self.shown(text)
            self.lines.append(line)
            self.log_view.write(Text(line))
        runs = {k[1]: v for k, v in latest.items() if k[0] == "node"}
        if runs:
            self.rollout.update_runs(runs)
            self.rollout.set_nodes(self.app.panel.nodes)
            self.query_one("#rotate-status", Static).update(Text(self.restarting, "bold cyan"))

    def _progress(self, p) -> None:
        if p.node and p.phase:
            self.events.put(("node", p.node), p)

    @work(thread=True, group="operation", exit_on_error=False)
    def _run(self) -> None:
        try:
            code, line = self.start()
        except Exception as e:  # noqa: BLE001 - never a traceback on screen (it could carry a token)
            code, line = 2, self.session.mask(f"{type(e).__name__}: {e}")
        self.app.call_from_thread(self._finished, code, line)

    def _finished(self, code: int, line: str) -> None:
        self.code = code
        status = self.query_one("#rotate-status", Static)
        if code == 0:
            status.update(Text(self.shown(line[:1].upper() + line[1:]) + ". Esc closes.", "bold green"))
        else:
            status.update(Text(self.shown(line[:1].upper() + line[1:]) + " — Esc closes.", "bold red"))
        self.lines.append(self.shown(line))
        self.log_view.write(Text(self.shown(line), "bold green" if code == 0 else "bold red"))

    def action_close(self) -> None:
        if self.code is None:
            self.notify(f"the {self.noun} is running: x aborts it (the node restarting now finishes first)",
                        severity="warning")
            return
        self.dismiss(self.code)

    def action_abort(self) -> None:
        if self.code is not None:
            self.notify(f"the {self.noun} has ended: Esc closes", severity="warning")
            return
        self.session.abort()
        self.notify(f"aborting the {self.noun} at the next safe point…", severity="warning")
