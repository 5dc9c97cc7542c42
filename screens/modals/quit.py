"""Quitting while something is being applied: say what finishes first, and ask before leaving."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from .help import HELP_KEYS


class QuitScreen(ModalScreen[bool]):
    """Dismisses True to quit (the apply stops at its next safe point), False to stay."""

    BINDINGS = [Binding("y", "quit", "Quit"), Binding("n", "stay", "Stay"), Binding("escape", "stay", "Stay")] + HELP_KEYS

    def __init__(self, applying: str, first: str):
        super().__init__()
        self.applying, self.first = applying, first

    def compose(self) -> ComposeResult:
        with Vertical(id="quit-box") as box:
            box.border_title = "Quit while applying?"
            text = Text()
            text.append(f"{self.applying} is being applied.\n\n", "bold")
            text.append("If you quit now: ", "bold")
            text.append(self.first + "\n\n")
            text.append("Nothing is lost: run the same command again and the wizard offers to resume where the "
                        "cluster is.", "dim")
            yield Static(text, id="quit-text")
            with Horizontal(id="quit-actions"):
                yield Button("Quit (y)", id="quit-yes", variant="error", compact=True)
                yield Button("Stay (n)", id="quit-no", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#quit-no", Button).focus()

    @on(Button.Pressed, "#quit-yes")
    def action_quit(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#quit-no")
    def action_stay(self) -> None:
        self.dismiss(False)
