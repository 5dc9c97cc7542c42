"""Overriding a failed gating check: the operator types the stage's key (or title), as GitHub asks for a repo name.

The override passes over the check, never over the stage's changes: they stay pending until applied."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from wizard.stages import names
from wizard.stages.base import Check

from .help import HELP_KEYS


class OverrideScreen(ModalScreen[tuple[Check, str] | None]):
    """Dismisses with (check, typed words), or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")] + HELP_KEYS

    def __init__(self, stage_title: str, stage_key: str, check: Check, shown, blink: bool = True):
        super().__init__()
        self.stage_title, self.key, self.check, self.shown, self.blink = stage_title, stage_key, check, shown, blink

    def compose(self) -> ComposeResult:
        with Vertical(id="override-box") as box:
            box.border_title = "Override a failed check"
            text = Text()
            text.append(f"{self.stage_title}: ", "bold")
            text.append(self.shown(self.check.name) + "\n", "bold red")
            text.append("cause: ", "bold")
            text.append(self.shown(self.check.cause) + "\n")
            text.append("\nThe next stages build on this one. The override passes over this check only: the "
                        "stage's changes still have to be applied before Next opens. It is recorded, with who "
                        "typed it, in the journal and in the final report.\n", "yellow")
            text.append("Type ")
            text.append(self.key, "bold reverse")
            text.append(" (or ")
            text.append(self.stage_title, "bold reverse")
            text.append(") to override:")
            yield Static(text, id="override-text")
            yield Input(placeholder=self.key, id="override-input", select_on_focus=False)
            yield Label("", id="override-error")
            with Horizontal(id="override-actions"):
                yield Button("Override", id="override-ok", variant="error", compact=True)
                yield Button("Cancel", id="override-cancel", compact=True)

    def on_mount(self) -> None:
        field = self.query_one(Input)
        field.cursor_blink = self.blink
        field.focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#override-ok")
    def _ok(self) -> None:
        typed = self.query_one(Input).value
        if not names(typed, self.key, self.stage_title):
            self.query_one("#override-error", Label).update(
                Text(f"type {self.key} (or {self.stage_title}) exactly", "bold red"))
            return
        self.dismiss((self.check, typed))

    @on(Button.Pressed, "#override-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
