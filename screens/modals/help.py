"""Help: every key of the screen below it, and what each does (? or F1 opens it, Escape closes it)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from ..widgets.keys import KeyScroll

# every dialog carries these: a modal screen hides the app's own bindings
HELP_KEYS = [Binding("question_mark", "app.help", "Help", show=False),
             Binding("f1", "app.help", "Help", show=False)]


def key_name(app, key: str) -> str:
    """'a', 'Esc', 'F1', '?' — as printed on the key."""
    names = {"escape": "Esc", "question_mark": "?", "enter": "Enter", "tab": "Tab", "ctrl+p": "Ctrl+P",
             "ctrl+q": "Ctrl+Q", "ctrl+c": "Ctrl+C"}
    return ", ".join(names.get(k, k.upper() if k.startswith("f") and k[1:].isdigit() else k)
                     for k in key.split(","))


class HelpScreen(ModalScreen[None]):
    """Lists (key, what it does) rows, grouped by where the keys work."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("question_mark", "close", "Close", show=False),
                Binding("f1", "close", "Close", show=False), Binding("q", "close", "Close", show=False)]

    def __init__(self, title: str, groups: list[tuple[str, list[tuple[str, str, str]]]]):
        """groups: (heading, [(key, name, what it does), …])."""
        super().__init__()
        self.title_text, self.groups = title, groups

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box") as box:
            box.border_title = f"Help — keys of {self.title_text}"
            box.border_subtitle = "Esc closes · ? or F1 opens this from anywhere"
            with KeyScroll(id="help-scroll"):
                for heading, rows in self.groups:
                    table = Table(box=None, show_header=False, pad_edge=False, expand=True, padding=(0, 2, 0, 0))
                    table.add_column("key", style="bold cyan", no_wrap=True, width=13)
                    table.add_column("name", style="bold", no_wrap=True, width=24)
                    table.add_column("what it does", ratio=1)
                    for key, name, what in rows:
                        table.add_row(key, name, what)
                    yield Static(Text(heading, "bold underline"), classes="help-heading")
                    yield Static(table)

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
