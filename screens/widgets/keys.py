"""Scrollables that answer the keys operators' terminal tools use (less, k9s, lazygit): j/k beside the arrows.

Textual's scroll containers, logs and tables already take the arrows, PageUp/PageDown and Home/End once
focused; these add j and k, so every scrollable thing (diffs, checks, the log, the auth flow, help) scrolls
the same way. Focus shows as a tint and an accent scrollbar (app.tcss), without moving any text.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, RichLog

SCROLL_KEYS = [Binding("j", "scroll_down", "Scroll down", show=False),
               Binding("k", "scroll_up", "Scroll up", show=False)]


class KeyScroll(VerticalScroll):
    """A vertical scroll pane: arrows, PageUp/PageDown, Home/End, j/k."""

    BINDINGS = SCROLL_KEYS


class KeyLog(RichLog):
    """The log pane: arrows, PageUp/PageDown, Home/End, j/k."""

    BINDINGS = SCROLL_KEYS


class KeyTable(DataTable):
    """A table whose cursor moves with j/k too."""

    BINDINGS = [Binding("j", "cursor_down", "Cursor down", show=False),
                Binding("k", "cursor_up", "Cursor up", show=False)]
