"""Rolling the migration back from the wizard: a typed confirmation, then the rollback on its own screen.

The rollback itself is the engine's (``Session.rollback`` → wizard/rollback.py, the same function as
``ghcr2gitea rollback``): workloads back on their recorded images, every node's registries.yaml as it was, the
proven rolling restart, the wizard's objects removed. This dialog only says what will happen and asks for the
word ``rollback``; its screen shows the nodes restarting and how it ended.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from .help import HELP_KEYS
from .operation import OperationScreen

WORD = "rollback"  # what the operator types to confirm


class RollbackConfirmScreen(ModalScreen[dict | None]):
    """Dismisses with the chosen options ({"restore_adopted": bool}), or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")] + HELP_KEYS

    def __init__(self, shown, blink: bool = True):
        super().__init__()
        self.shown, self.blink = shown, blink

    def compose(self) -> ComposeResult:
        with Vertical(id="rotate-box"):
            text = Text()
            text.append("The migration is taken back, as the journal recorded it before each change:\n", "bold")
            text.append("• every workload it patched runs its original GHCR images and pull secrets again;\n"
                        "• every node's registries.yaml is what it was (the backup, where the file is still what "
                        "the wizard wrote; else only the wizard's entries go), and every node restarts once more, "
                        "servers first, each proven;\n"
                        "• the objects the wizard created are deleted.\n")
            text.append("The images copied to Gitea stay; nothing on GHCR is touched.\n", "dim")
            yield Static(text, id="rotate-text")
            yield Checkbox("give adopted objects their recorded fields back (else they are left)",
                           id="rollback-adopted", compact=True)
            confirm = Text("Type ")
            confirm.append(WORD, "bold reverse")
            confirm.append(" to roll back:")
            yield Label(confirm)
            yield Input(placeholder=WORD, id="rollback-confirm", select_on_focus=False)
            yield Label("", id="rotate-error")
            with Horizontal(id="rotate-actions"):
                yield Button("Roll back", id="rollback-ok", variant="error", compact=True)
                yield Button("Cancel", id="rollback-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#rotate-box").border_title = "Roll the migration back"
        field = self.query_one("#rollback-confirm", Input)
        field.cursor_blink = self.blink
        field.focus()

    @on(Input.Submitted, "#rollback-confirm")
    @on(Button.Pressed, "#rollback-ok")
    def _ok(self) -> None:
        if self.query_one("#rollback-confirm", Input).value.strip() != WORD:
            self.query_one("#rotate-error", Label).update(Text(f"type {WORD} exactly to roll back", "bold red"))
            self.query_one("#rollback-confirm", Input).focus()
            return
        self.dismiss({"restore_adopted": self.query_one("#rollback-adopted", Checkbox).value})

    @on(Button.Pressed, "#rollback-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class RollbackScreen(OperationScreen):
    """The rollback under way (Session.rollback). Dismisses with its exit code (0: rolled back and proven)."""

    noun = "rollback"
    starting = "Rolling the migration back: workloads first…"
    restarting = "Rolling the migration back: restarting the nodes one at a time (x aborts)"
    detail = "Workloads and node files go back first; then the nodes restart: servers one at a time, then agents."

    def __init__(self, session, shown, *, restore_adopted: bool = False):
        super().__init__(session, shown)
        self.restore_adopted = restore_adopted

    def start(self):
        from wizard.rollback import Refused
        try:
            done = self.session.rollback(out=self.events.append, restore_adopted=self.restore_adopted,
                                         on_progress=self._progress)
        except Refused as e:
            return 2, f"not started: {e}"
        return done.code, done.line
