"""Adopting an object the wizard does not own: the operator types the object's name (issue 11 §3).

The same pattern as the override: nothing happens until the exact name is typed; the session records the
adoption in the journal, and the object carries the wizard's label once applied.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from wizard.ownership import Ref

from .help import HELP_KEYS


class AdoptScreen(ModalScreen[tuple[Ref, str] | None]):
    """Dismisses with (ref, typed name), or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")] + HELP_KEYS

    def __init__(self, ref: Ref, cause: str, shown, blink: bool = True):
        super().__init__()
        self.ref, self.cause, self.shown, self.blink = ref, cause, shown, blink

    def compose(self) -> ComposeResult:
        with Vertical(id="override-box") as box:
            box.border_title = "Adopt an object the wizard does not own"
            text = Text()
            text.append(self.shown(self.cause) + "\n", "bold red")
            text.append("\nAdopting lets the wizard change it: the fields the plan sets are taken over (their "
                        "owner's other fields stay) and it is labelled as the wizard's. Recorded in the journal.\n",
                        "yellow")
            text.append("Type ")
            text.append(self.ref.name, "bold reverse")
            text.append(" to adopt it:")
            yield Static(text, id="override-text")
            yield Input(placeholder=self.ref.name, id="override-input", select_on_focus=False)
            yield Label("", id="override-error")
            with Horizontal(id="override-actions"):
                yield Button("Adopt", id="adopt-ok", variant="error", compact=True)
                yield Button("Cancel", id="adopt-cancel", compact=True)

    def on_mount(self) -> None:
        field = self.query_one(Input)
        field.cursor_blink = self.blink
        field.focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#adopt-ok")
    def _ok(self) -> None:
        typed = self.query_one(Input).value
        if typed.strip() != self.ref.name:
            self.query_one("#override-error", Label).update(Text(f"type {self.ref.name} exactly", "bold red"))
            return
        self.dismiss((self.ref, typed))

    @on(Button.Pressed, "#adopt-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
