"""The gating checks of a stage: live status, cause, fix and evidence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import yaml
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from wizard.stages.base import Check

from .keys import KeyScroll, KeyTable

STATUS = {"pass": Text("✓ pass", "bold green"), "fail": Text("✗ FAIL", "bold red"),
          "warn": Text("! warn", "bold yellow"), "skip": Text("- skip", "dim"),
          "overridden": Text("⚠ overridden", "bold magenta"), "running": Text("… checking", "cyan"),
          "pending": Text("○ not run", "dim")}


def has_hops(check: Check) -> bool:
    ev = check.evidence
    return isinstance(ev, dict) and bool(ev.get("hops"))


def evidence_text(evidence, shown: Callable[[str], str]) -> str:
    if not evidence:
        return ""
    if isinstance(evidence, str):
        return shown(evidence)
    text = yaml.safe_dump(evidence, sort_keys=False, default_flow_style=False, width=100, allow_unicode=True)
    lines = text.splitlines()
    if len(lines) > 40:
        lines = lines[:40] + [f"… {len(lines) - 40} more line(s)"]
    return shown("\n".join(lines))


def clip(text: str, width: int) -> str:
    """``text`` in ``width`` cells, cut at a word boundary with '…' (the detail pane below has it whole)."""
    if len(text) <= width:
        return text
    cut = text[:max(1, width - 1)]
    if " " in cut[width // 2:]:
        cut = cut[:cut.rfind(" ")]
    return cut.rstrip(" ,:;—-") + "…"


STATUS_WIDTH = 12  # "⚠ overridden": never wrapped, never cut


class ChecksView(Vertical):
    """A table of checks and, below it, the highlighted check's cause, fix and evidence."""

    @dataclass
    class Highlighted(Message):
        check: Check | None

    def __init__(self, shown: Callable[[str], str], **kw):
        super().__init__(**kw)
        self.shown = shown
        self.checks: list[Check] = []
        self.overridden: set[str] = set()

    def compose(self) -> ComposeResult:
        yield KeyTable(id="checks", cursor_type="row")
        with KeyScroll(id="check-detail-scroll"):
            yield Static("", id="check-detail")

    def _widths(self) -> tuple[int, int]:
        """(Check, Cause) column widths that fit the pane: no column squeezed, no sideways scrolling that cuts
        the Cause mid-word; what does not fit ends in '…' and the detail pane shows it whole."""
        width = self.size.width or max(40, self.app.size.width - 32)
        avail = max(30, width - STATUS_WIDTH - 3 * 2 - 2)  # each column pads a cell each side; the scrollbar
        names = max((len(self.shown(c.name)) for c in self.checks), default=10)
        name = min(names, max(20, avail * 11 // 20))
        return name, max(10, avail - name)

    def _columns(self, table: DataTable) -> None:
        # rebuilt with the rows, so widths follow what is shown now, not what was shown before
        table.clear(columns=True)
        name, cause = self._widths()
        table.add_column("Status", key="status", width=STATUS_WIDTH)
        table.add_column("Check", key="name", width=name)
        table.add_column("Cause", key="cause", width=cause)

    def on_resize(self) -> None:
        if self.checks:
            self.show(self.checks, overridden=self.overridden)

    def on_mount(self) -> None:
        self._columns(self.query_one("#checks", DataTable))

    @property
    def highlighted(self) -> Check | None:
        table = self.query_one("#checks", DataTable)
        if not self.checks or table.cursor_row is None or table.cursor_row >= len(self.checks):
            return None
        return self.checks[table.cursor_row]

    def show(self, checks: list[Check] | None, *, overridden: set[str] = frozenset(), state: str = "") -> None:
        table = self.query_one("#checks", DataTable)
        keep = table.cursor_row if self.checks and checks and len(checks) == len(self.checks) else 0
        self.checks = list(checks or [])
        self.overridden = set(overridden)
        self._columns(table)
        if not self.checks:
            table.add_row(STATUS["running" if state == "verifying" else "pending"],
                          "checking…" if state == "verifying" else "not checked yet", "", key="-")
            self.query_one("#check-detail", Static).update(
                "" if state == "verifying" else "Apply the changes first, or press v to check now.")
            return
        name_w, cause_w = self._widths()
        for i, c in enumerate(self.checks):
            status = "overridden" if c.name in self.overridden and c.status == "fail" else c.status
            cause = clip(" ".join(self.shown(c.cause or "").split()), cause_w)
            table.add_row(STATUS.get(status, Text(status)), clip(self.shown(c.name), name_w),
                          Text(cause, "red" if c.status == "fail" else ""), key=str(i))
        table.move_cursor(row=min(keep, len(self.checks) - 1))
        self._detail(self.highlighted)

    @on(DataTable.RowHighlighted, "#checks")
    def _row(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        check = self.highlighted
        self._detail(check)
        self.post_message(self.Highlighted(check))

    def _detail(self, c: Check | None) -> None:
        out = Text()
        if c is not None:
            out.append(f"{self.shown(c.name)}: ", "bold")
            out.append(STATUS.get(c.status, Text(c.status)))
            if not c.gating:
                out.append("  (advisory: does not gate Next)", "dim")
            if c.name in self.overridden:
                out.append("  overridden by the operator", "bold magenta")
            out.append("\n")
            if c.cause:
                out.append("cause: ", "bold")
                out.append(self.shown(c.cause) + "\n")
            if c.fix:
                out.append("fix:   ", "bold")
                out.append(self.shown(c.fix) + "\n", "green" if c.status == "fail" else "")
            ev = evidence_text(c.evidence, self.shown)
            if has_hops(c):
                out.append("evidence: the token flow, hop by hop — press f\n", "bold cyan")
            elif ev:
                out.append("evidence:\n", "bold")
                out.append(ev, "dim")
        self.query_one("#check-detail", Static).update(out)
