"""Rotating the Gitea token from the wizard: the new token's file and a typed confirmation, then the rotation.

The dialog asks for the path of the file holding the new token (read as every command reads a token file:
wizard.credentials.load_token, mode 600) and for the word ``rotate``. The rotation itself is the engine's
(``Session.rotate_token`` → wizard/rotate.py, the same function as ``ghcr2gitea rotate-token``); its screen shows
the nodes restarting in the rollout view, the stages' lines, and at the end whether the old token may be revoked.
Neither token is ever drawn: the dialog never echoes the file's content, and every line passes ``shown``.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Label, RichLog, Static

from wizard.credentials import CredentialError, Secret, load_token

from ..coalesce import Coalescer
from ..widgets.rollout import RolloutView
from .help import HELP_KEYS

WORD = "rotate"  # what the operator types to confirm


class RotateTokenScreen(ModalScreen[Secret | None]):
    """Dismisses with the new token (read from the file the operator named), or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")] + HELP_KEYS

    def __init__(self, shown, blink: bool = True):
        super().__init__()
        self.shown, self.blink = shown, blink

    def compose(self) -> ComposeResult:
        with Vertical(id="rotate-box") as box:
            box.border_title = "Rotate the Gitea token"
            text = Text()
            text.append("The new token replaces the old one in both registry Secrets and in every node's "
                        "registries.yaml; every node restarts once more (servers first, each proven), and pulls "
                        "with the new token are verified on every node. Only then may the old token be revoked.\n\n")
            text.append("Create the new token in Gitea first (Settings → Applications, for the registry user) and "
                        "save it in a file only you can read (chmod 600).\n", "dim")
            yield Static(text, id="rotate-text")
            yield Label("The new token's file:")
            yield Input(placeholder="/path/to/new-token (mode 600)", id="rotate-path", select_on_focus=False)
            confirm = Text("Type ")
            confirm.append(WORD, "bold reverse")
            confirm.append(" to rotate:")
            yield Label(confirm)
            yield Input(placeholder=WORD, id="rotate-confirm", select_on_focus=False)
            yield Label("", id="rotate-error")
            with Horizontal(id="rotate-actions"):
                yield Button("Rotate", id="rotate-ok", variant="error", compact=True)
                yield Button("Cancel", id="rotate-cancel", compact=True)

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = self.blink
        self.query_one("#rotate-path", Input).focus()

    def _error(self, text: str) -> None:
        self.query_one("#rotate-error", Label).update(Text(self.shown(text), "bold red"))

    @on(Input.Submitted, "#rotate-path")
    def _next_field(self) -> None:
        self.query_one("#rotate-confirm", Input).focus()

    @on(Input.Submitted, "#rotate-confirm")
    @on(Button.Pressed, "#rotate-ok")
    def _ok(self) -> None:
        path = self.query_one("#rotate-path", Input).value.strip()
        if not path:  # load_token without a file would fall back to GITEA_TOKEN: never here
            self._error("the new token's file: give its path (a file of mode 600 holding only the new token)")
            self.query_one("#rotate-path", Input).focus()
            return
        try:
            new = load_token(str(Path(path).expanduser()), prompt=False)
        except CredentialError as e:
            self._error(str(e).replace("--token-file", "the new token's file", 1))
            self.query_one("#rotate-path", Input).focus()
            return
        if self.query_one("#rotate-confirm", Input).value.strip() != WORD:
            self._error(f"type {WORD} exactly to rotate")
            self.query_one("#rotate-confirm", Input).focus()
            return
        self.dismiss(new)

    @on(Button.Pressed, "#rotate-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class RotationScreen(Screen[int]):
    """The rotation under way: the rollout of the node restarts, the stages' lines, and how it ended.
    Dismisses with the rotation's exit code (0: the old token may be revoked)."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("x", "abort", "Abort")] + HELP_KEYS

    def __init__(self, session, new: Secret, shown):
        super().__init__()
        self.session, self.new, self.shown = session, new, shown
        self.code: int | None = None  # None while the rotation runs
        self.lines: list[str] = []  # what the log holds, as plain text
        self.events = Coalescer(self, self._flush)

    def compose(self) -> ComposeResult:
        with Vertical(id="rotation"):
            yield Static(Text("Rotating the Gitea token: checking the new token…", "bold cyan"), id="rotate-status")
            yield RolloutView(id="rotate-rollout")
            log = RichLog(id="rotate-log", wrap=True, markup=False, max_lines=2000)
            log.border_title = "Rotation"
            yield log
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.rollout = self.query_one(RolloutView)
        self.log_view = self.query_one("#rotate-log", RichLog)
        self.rollout.query_one("#rollout-detail", Static).update(
            "The new token is checked and written first; then the nodes restart: servers one at a time, then agents.")
        self._rotate()

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
            self.query_one("#rotate-status", Static).update(
                Text("Rotating the Gitea token: restarting the nodes one at a time (x aborts)", "bold cyan"))

    def _progress(self, p) -> None:
        if p.node and p.phase:
            self.events.put(("node", p.node), p)

    @work(thread=True, group="rotate", exit_on_error=False)
    def _rotate(self) -> None:
        from wizard.rotate import Refused
        try:
            done = self.session.rotate_token(self.new, out=self.events.append, on_progress=self._progress)
            code, line = done.code, done.line
        except Refused as e:
            code, line = 2, f"not started: {e}"
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
            self.notify("the rotation is running: x aborts it (the node restarting now finishes first)",
                        severity="warning")
            return
        self.dismiss(self.code)

    def action_abort(self) -> None:
        if self.code is not None:
            self.notify("the rotation has ended: Esc closes", severity="warning")
            return
        self.session.abort()
        self.notify("aborting the rotation at the next safe point…", severity="warning")
