"""The resume offer: an unfinished migration of this cluster, re-inspected, to continue or start over."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from wizard.session import ResumeOffer

from .help import HELP_KEYS


class ResumeScreen(ModalScreen[bool]):
    """Dismisses True to resume, False to start over."""

    BINDINGS = [Binding("r", "resume", "Resume"), Binding("s", "start_over", "Start over"),
                Binding("escape", "resume", "Resume", show=False)] + HELP_KEYS

    def __init__(self, offer: ResumeOffer, stage_titles: dict[str, str], fresh: str = ""):
        """``fresh``: what "Start fresh" does, where the cluster can be made anew (the demo); it then replaces
        "Start over" (which keeps the cluster as it is)."""
        super().__init__()
        self.offer, self.titles, self.fresh = offer, stage_titles, fresh

    def compose(self) -> ComposeResult:
        o = self.offer
        with Vertical(id="resume-box") as box:
            box.border_title = "Unfinished migration of this cluster"
            text = Text()
            for line in o.describe(self.titles):
                style = "bold yellow" if line.startswith("the cluster differs") else ""
                text.append("• " + line + "\n", style)
            other = (f"Start fresh {self.fresh}." if self.fresh else
                     "Start over opens Preflight (the cluster keeps what was applied).")
            text.append("\nResume continues at the first stage that is not done; work already proven is not "
                        f"repeated. {other}", "dim")
            yield Static(text, id="resume-text")
            with Horizontal(id="resume-actions"):
                yield Button("Resume (r)", id="resume-yes", variant="primary", compact=True)
                yield Button("Start fresh (s)" if self.fresh else "Start over (s)", id="resume-no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#resume-yes", Button).focus()

    @on(Button.Pressed, "#resume-yes")
    def action_resume(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#resume-no")
    def action_start_over(self) -> None:
        self.dismiss(False)


class FreshResumeScreen(ResumeScreen):
    """The offer where the cluster can be made anew (the demo): ``s`` starts fresh, and says so in the footer and
    the help screen as on its button."""

    BINDINGS = [Binding("s", "start_over", "Start fresh")]
