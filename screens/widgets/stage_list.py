"""The stage list: every step of the migration with its state (done, current, failed, pending, locked)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

STYLE = {"done": "green", "current": "bold", "failed": "bold red", "pending": "", "locked": "dim", "skipped": "dim",
         "overridden": "bold magenta", "paused": "bold yellow"}
# an overridden stage is never ✓: it is done only because the operator passed over a failed check
MARK = {"done": "✓", "current": "▶", "failed": "✗", "pending": "○", "locked": "·", "skipped": "-",
        "overridden": "⚠", "paused": "‖"}


NOTE_INDENT = " " * 5  # under the title, past the mark and the number
# the list's narrowest content (24 columns at 80, less its border) less the indent: a note wraps to it by words,
# each line indented, instead of the terminal wrapping "paused — Apply resumes" back to the list's edge
NOTE_WIDTH = 22 - len(NOTE_INDENT)


def stage_prompt(number: int, title: str, state: str, note: str = "") -> Text:
    text = Text()
    text.append(f"{MARK.get(state, '?')} ", style=STYLE.get(state, "") or "bold")
    text.append(f"{number:>2} {title}", style=STYLE.get(state, ""))
    if note:  # on its own lines, indented under the title: it never wraps the title, nor back to the edge
        lines = textwrap.wrap(note, NOTE_WIDTH) or [note]
        text.append("".join(f"\n{NOTE_INDENT}{line}" for line in lines),
                    style="magenta" if state in ("overridden", "current") else "yellow")
    return text


class StageList(OptionList):
    """One option per stage; locked stages cannot be opened."""

    BORDER_TITLE = "Stages"

    @dataclass
    class Chosen(Message):
        """The operator picked a stage to look at."""

        index: int

    def __init__(self, titles: list[str], **kw):
        self.titles = titles
        self.states = ["locked"] * len(titles)
        super().__init__(*(Option(stage_prompt(i + 1, t, "locked"), id=f"stage-{i}")
                           for i, t in enumerate(titles)), **kw)

    def set_state(self, index: int, state: str, *, note: str = "", viewable: bool = True) -> None:
        self.states[index] = state
        self.replace_option_prompt_at_index(index, stage_prompt(index + 1, self.titles[index], state, note))
        opt = self.get_option_at_index(index)
        if opt.disabled == viewable:
            if viewable:
                self.enable_option_at_index(index)
            else:
                self.disable_option_at_index(index)

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.Chosen(event.option_index))
