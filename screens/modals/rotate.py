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
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from wizard.credentials import CredentialError, Secret, load_token

from .help import HELP_KEYS
from .operation import OperationScreen

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


class RotationScreen(OperationScreen):
    """The rotation under way (Session.rotate_token). Dismisses with its exit code (0: the old token may go)."""

    noun = "rotation"
    starting = "Rotating the Gitea token: checking the new token…"
    restarting = "Rotating the Gitea token: restarting the nodes one at a time (x aborts)"
    detail = "The new token is checked and written first; then the nodes restart: servers one at a time, then agents."

    def __init__(self, session, new: Secret, shown):
        super().__init__(session, shown)
        self.new = new

    def start(self):
        from wizard.rotate import Refused
        try:
            done = self.session.rotate_token(self.new, out=self.events.append, on_progress=self._progress)
        except Refused as e:
            return 2, f"not started: {e}"
        return done.code, done.line
