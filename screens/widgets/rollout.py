"""The rolling restart, node by node: phase, elapsed time, a progress bar and the proofs ticking off.

Above the table, the guards: which nodes are down now and whether etcd keeps its quorum
(every other server Ready before the next server goes). Below, for the highlighted node —
or the one that failed — what was proven and what was not.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static
from textual.widgets.data_table import ColumnKey

from wizard.kube import NodeInfo
from wizard.proofs import PROOFS as RESTART_PROOFS
from wizard.restart import PROOFS
from wizard.stages.base import Progress

from .cluster_panel import servers_up
from .keys import KeyScroll, KeyTable

SHORT = {"restart started": "start", **{p.name: p.short for p in RESTART_PROOFS}}  # the proofs' own ticks
PHASE_STYLE = {"queued": "dim", "held": "yellow", "restarting": "bold cyan", "waiting": "cyan", "done": "bold green",
               "failed": "bold red", "skipped": "yellow"}
BAR = 10
MOVING = ("restarting", "waiting")  # a node in these phases ticks: the engine may say nothing for a while


def now_text(node: str, message: str) -> str:
    """What the node waits for now, from its last message: 'waiting for heartbeat, Ready'."""
    text = message.split("; proven:")[0].removeprefix(node + ": ")
    return text if len(text) <= 48 else text[:47] + "…"


def progress_bar(proofs: dict | None, phase: str) -> Text:
    got = sum(bool(v) for v in (proofs or {}).values())
    full = BAR if phase == "done" else round(BAR * got / len(PROOFS))
    style = "red" if phase == "failed" else "green" if phase == "done" else "cyan"
    return Text("█" * full, style) + Text("░" * (BAR - full), "dim")


def proof_letters() -> str:
    """The compact Proofs column's header: each proof's initial right above its tick (s u b e R c)."""
    return "".join(SHORT[name][0] for name in PROOFS)


def proof_legend() -> str:
    """What the compact header's letters stand for, in order: 'start unit beat event Ready ctrd'."""
    return " ".join(SHORT[name] for name in PROOFS)


def proof_ticks(proofs: dict | None, compact: bool = False) -> Text:
    """✓start ✓unit ·beat … (compact: ✓✓·…, in PROOFS order, under the header's letters, for narrow screens)."""
    out = Text()
    for name in PROOFS:
        ok = bool((proofs or {}).get(name))
        out.append(("✓" if ok else "·") + ("" if compact else SHORT[name] + " "), "green" if ok else "dim")
    return out


def guards_text(runs: dict[str, Progress], nodes: dict[str, NodeInfo]) -> Text:
    """Who is down (restarting or not Ready) and whether the servers keep quorum."""
    restarting = {n for n, p in runs.items() if p.phase in MOVING}
    down = sorted(restarting | {n for n, p in runs.items() if p.phase == "failed"}
                  | {n.name for n in nodes.values() if n.ready != "True"})
    up, total, _ = servers_up(nodes, restarting)  # the same count as the cluster panel's
    quorum = up > total // 2 if total else True
    text = Text()
    text.append("down: ", "bold")
    text.append(", ".join(down) if down else "none", "bold yellow" if down else "green")
    text.append(" · quorum: ", "bold")
    text.append(f"{'ok' if quorum else 'AT RISK'} ({up}/{total} servers up)", "green" if quorum else "bold red")
    done = sum(p.phase == "done" for p in runs.values())
    text.append(f" · proven {done}/{len(runs)}" if runs else " · not started", "")
    return text


class RolloutView(Vertical):
    """One row per node of the rollout; coalesced updates arrive through ``update_runs``."""

    def __init__(self, clock=time.monotonic, **kw):
        super().__init__(**kw)
        self.clock = clock  # the tests pin it, so a snapshot never depends on when it was taken
        self.seen: dict[str, float] = {}  # node → clock() when its last event arrived
        self.runs: dict[str, Progress] = {}
        self.order: list[str] = []
        self.nodes: dict[str, NodeInfo] = {}

    def compose(self) -> ComposeResult:
        yield Static("", id="guards")
        yield KeyTable(id="rollout", cursor_type="row")
        with KeyScroll(id="rollout-detail-scroll"):
            yield Static("Apply starts the rollout: servers one at a time, then agents.", id="rollout-detail")

    def on_mount(self) -> None:
        table = self.query_one("#rollout", DataTable)
        self._compact = self.compact
        for key, label in (("node", "Node"), ("phase", "Phase"), ("elapsed", "Elapsed"), ("bar", "Progress"),
                           ("proofs", self._proofs_label())):
            table.add_column(label, key=key)
        table.add_column("Now", key="now")
        self.set_interval(1.0, self._tick)  # Elapsed moves every second while a node restarts

    def elapsed(self, node: str) -> float:
        """The node's elapsed time now: its last event's, plus the time since (while it restarts)."""
        p = self.runs[node]
        extra = self.clock() - self.seen.get(node, self.clock()) if p.phase in MOVING else 0.0
        return (p.elapsed or 0.0) + max(0.0, extra)

    def _tick(self) -> None:
        table = self.query_one("#rollout", DataTable)
        for node, p in self.runs.items():
            if p.phase in MOVING and node in table.rows:
                table.update_cell(node, "elapsed", f"{self.elapsed(node):.1f} s")

    def reset(self) -> None:
        self.runs.clear()
        self.seen.clear()
        self.order.clear()
        self.query_one("#rollout", DataTable).clear()
        self._guards()

    def set_nodes(self, nodes: dict[str, NodeInfo]) -> None:
        self.nodes = nodes
        self._guards()

    @property
    def compact(self) -> bool:
        return 0 < self.size.width < 90 or (self.size.width == 0 and self.app.size.width < 110)

    def _proofs_label(self) -> str:
        # full names fit at 120 columns; at 80 one letter per tick, spelled out in the detail pane below
        return proof_letters() if self._compact else "Proofs"

    def update_runs(self, events: dict[str, Progress]) -> None:
        table = self.query_one("#rollout", DataTable)
        if self.compact != self._compact:  # resized across the breakpoint: the header follows the ticks
            self._compact = self.compact
            table.columns[ColumnKey("proofs")].label = Text(self._proofs_label())
            for node in self.order:
                table.update_cell(node, "proofs", proof_ticks(self.runs[node].proofs, compact=self._compact))
        for node, p in events.items():
            self.runs[node] = p
            self.seen[node] = self.clock()
            moving = p.phase in MOVING
            cells = (node, Text(p.phase or "", PHASE_STYLE.get(p.phase or "", "")),
                     f"{p.elapsed:.1f} s" if p.elapsed or moving else "—", progress_bar(p.proofs, p.phase or ""),
                     proof_ticks(p.proofs, compact=self._compact),
                     Text(now_text(node, p.message) if moving or p.phase in ("failed", "held") else "",
                          "red" if p.phase == "failed" else "yellow" if p.phase == "held" else "cyan"))
            if node in table.rows:
                for key, value in zip(("node", "phase", "elapsed", "bar", "proofs", "now"), cells, strict=True):
                    # the Now column grows with what a node waits for (a row added while queued had nothing), the
                    # Phase column with the phase ("queued" first, "restarting" later: never cut to "restar")
                    table.update_cell(node, key, value, update_width=key in ("now", "phase"))
            else:
                self.order.append(node)
                table.add_row(*cells, key=node)
        failed = next((n for n in self.order if self.runs[n].phase == "failed"), None)
        if failed is not None:
            table.move_cursor(row=self.order.index(failed))
        self._guards()
        self._detail()

    def _guards(self) -> None:
        self.query_one("#guards", Static).update(guards_text(self.runs, self.nodes))

    @on(DataTable.RowHighlighted, "#rollout")
    def _row(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._detail()

    def _detail(self) -> None:
        table = self.query_one("#rollout", DataTable)
        if not self.order or table.cursor_row is None or table.cursor_row >= len(self.order):
            return
        node = self.order[table.cursor_row]
        p = self.runs[node]
        proofs = p.proofs or {}
        out = Text()
        out.append(f"{node}: ", "bold")
        out.append(p.phase or "", PHASE_STYLE.get(p.phase or "", ""))
        message = p.message.split("; proven:")[0]
        out.append(f" — {message.removeprefix(node + ': ')}\n")
        out.append("proven: ", "bold")
        out.append(", ".join(k for k in PROOFS if proofs.get(k)) or "nothing", "green")
        out.append("\nnot proven: ", "bold")
        out.append(", ".join(k for k in PROOFS if not proofs.get(k)) or "nothing",
                   "bold red" if p.phase == "failed" else "dim")
        if self._compact:  # the legend first: the pane is short at 80×24
            out = Text(f"{proof_letters()} = {proof_legend()}\n", "dim") + out
        self.query_one("#rollout-detail", Static).update(out)
