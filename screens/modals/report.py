"""The final report: every stage, its checks, and the overrides, with export to JSON and Markdown."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from wizard.session import Session

from ..widgets.keys import KeyScroll
from .help import HELP_KEYS

MARK = {"pass": ("✓", "green"), "fail": ("✗", "bold red"), "warn": ("!", "yellow"), "skip": ("-", "dim")}


def report_text(session: Session) -> Text:
    text = Text()
    for r, st in zip(session.results(), session.states, strict=True):
        mark, style = MARK.get(r.status, ("?", ""))
        if not r.checks:  # never checked: no ✓ for what nobody verified
            mark, style = "·", "dim"
        elif any(o.stage == st.key for o in session.overrides):
            mark, style = "⚠", "bold magenta"
        text.append(f" {mark} ", style)
        text.append(f"{st.title:<18}", "bold")
        counts = {s: sum(c.status == s for c in r.checks) for s in ("pass", "fail", "warn", "skip")}
        text.append("  ".join(f"{n} {s}" for s, n in counts.items() if n) or "not checked", "dim")
        text.append("\n")
    text.append("\nOverrides: ", "bold")
    if session.overrides:
        text.append("\n")
        for o in session.overrides:
            text.append(f" ⚠ {o.stage}: {session.mask(o.check)} — {session.mask(o.cause)} (typed {o.typed!r} "
                        f"by {session.mask(o.by)})\n", "magenta")
    else:
        text.append("none — every gating check passed\n", "green")
    return text


class ReportScreen(ModalScreen[None]):
    BINDINGS = [Binding("e", "app.export", "Export JSON + Markdown"), Binding("escape", "close", "Close"),
                Binding("q", "app.quit", "Quit")] + HELP_KEYS

    def __init__(self, session: Session, title: str):
        super().__init__()
        self.session, self.title_text = session, title

    def compose(self) -> ComposeResult:
        with Vertical(id="report-box") as box:
            box.border_title = self.title_text
            box.border_subtitle = "e export · esc close · q quit"
            with KeyScroll(id="report-scroll"):
                yield Static(report_text(self.session), id="report-text")

    def on_mount(self) -> None:
        self.query_one("#report-scroll").focus()  # the keys scroll at once (arrows, PageUp/PageDown, Home/End, j/k)

    def action_close(self) -> None:
        self.dismiss(None)
