"""The live cluster panel: every node with its role, Ready, kubelet, registries.yaml state and wizard pods.

Fed by watches (``watches.node_watch``, ``watches.pod_watch``), never polled. Changes are coalesced: one redraw
per frame touches only the rows that changed, so a 1000-node cluster restarting stays fluid.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from wizard.kube import NodeInfo
from wizard.watches import WizardPod

from ..coalesce import Coalescer
from .keys import KeyTable

READY_TEXT = {"True": Text("Ready", "green"), "False": Text("NotReady", "bold red"),
              "Unknown": Text("Unknown", "yellow")}
REGISTRIES_STYLE = {"loaded": "green", "absent": "dim", "written": "yellow", "needs restart": "bold yellow",
                    "restarting": "cyan", "invalid": "bold red"}
COLUMNS = (("name", "Node"), ("role", "Role"), ("ready", "Ready"), ("registries", "registries.yaml"),
           ("pods", "Wizard pods"), ("kubelet", "Kubelet"))


def servers_up(nodes: dict[str, NodeInfo], restarting: set[str]) -> tuple[int, int, list[str]]:
    """(up, total, down): a server is down while it is not Ready or the wizard is restarting it.

    The one count of servers up: the cluster panel and the rollout's quorum guard both show it."""
    servers = [n for n in nodes.values() if n.role == "server"]
    down = [n.name for n in servers if n.ready != "True" or n.name in restarting]
    return len(servers) - len(down), len(servers), down


class ClusterPanel(Vertical):
    """Nodes (live) and a one-line summary: how many Ready, servers down, wizard pods."""

    BORDER_TITLE = "Cluster (live)"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.nodes: dict[str, NodeInfo] = {}
        self.registries: dict[str, str] = {}
        self.pods: dict[str, WizardPod] = {}
        self.pods_on: dict[str, int] = {}
        self.connection = "connecting…"
        self._shown: dict[str, tuple] = {}  # the cells on screen, per node
        self.coalescer = Coalescer(self, self._flush)

    def compose(self) -> ComposeResult:
        yield Static(self.connection, id="cluster-summary")
        yield KeyTable(id="nodes", cursor_type="row", zebra_stripes=False)

    def on_mount(self) -> None:
        table = self.query_one("#nodes", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)

    # ------------------------------------------------------------------ any thread
    def nodes_changed(self, nodes: list[NodeInfo], deleted: list[str]) -> None:
        self.coalescer.put_many([(("node", n.name), n) for n in nodes] + [(("node", d), None) for d in deleted])

    def pods_changed(self, pods: list[WizardPod], deleted: list[str]) -> None:
        self.coalescer.put_many([(("pod", p.key), p) for p in pods] + [(("pod", d), None) for d in deleted])

    def status_changed(self, text: str) -> None:
        self.coalescer.put(("status",), text)

    # ------------------------------------------------------------------ UI thread
    def set_registries(self, states: dict[str, str]) -> None:
        changed = [n for n, s in states.items() if self.registries.get(n) != s]
        self.registries.update(states)
        if changed:
            self._redraw(changed)
            self._summary()  # a server restarting is a server down

    @on(Coalescer.Ready)
    def _coalesced(self, event: Coalescer.Ready) -> None:
        event.stop()
        event.coalescer.ready()

    def _flush(self, latest: dict, items: list) -> None:
        touched: set[str] = set()
        pods_touched = False
        for key, value in latest.items():
            if key[0] == "node":
                if value is None:
                    self.nodes.pop(key[1], None)
                elif self.nodes.get(key[1]) == value:
                    continue  # a heartbeat: nothing the panel shows changed
                else:
                    self.nodes[key[1]] = value
                touched.add(key[1])
            elif key[0] == "pod":
                pods_touched = True
                if value is None or not value.running:
                    self.pods.pop(key[1], None)
                else:
                    self.pods[key[1]] = value
            elif key[0] == "status":
                self.connection = value
        if pods_touched:
            counts: dict[str, int] = {}
            for p in self.pods.values():
                counts[p.node] = counts.get(p.node, 0) + 1
            touched |= {n for n in set(counts) | set(self.pods_on) if counts.get(n, 0) != self.pods_on.get(n, 0)}
            self.pods_on = counts
        self._redraw(touched)
        self._summary()

    def _cells(self, info: NodeInfo) -> tuple:
        reg = self.registries.get(info.name, "")
        pods = self.pods_on.get(info.name, 0)
        return (info.name, info.role, READY_TEXT.get(info.ready, Text(info.ready)),
                Text(reg or "—", REGISTRIES_STYLE.get(reg, "dim")),
                Text(str(pods), "bold cyan") if pods else Text("—", "dim"), info.kubelet)

    def _redraw(self, names) -> None:
        """Touch only the cells that changed (a Ready flip is one cell, not a row)."""
        table = self.query_one("#nodes", DataTable)
        for name in sorted(names, key=self._order):
            info = self.nodes.get(name)
            if info is None:
                if name in table.rows:
                    table.remove_row(name)
                self._shown.pop(name, None)
                continue
            cells = self._cells(info)
            before = self._shown.get(name)
            if before is None:
                table.add_row(*cells, key=name)
            else:
                for (key, _), old, value in zip(COLUMNS, before, cells, strict=True):
                    if old != value:
                        table.update_cell(name, key, value, update_width=len(str(value)) > len(str(old)))
            self._shown[name] = cells

    def _order(self, name: str):
        info = self.nodes.get(name)
        return (info is None or info.role != "server", name)

    def _summary(self) -> None:
        nodes = list(self.nodes.values())
        ready = sum(n.ready == "True" for n in nodes)
        up, total, down = servers_up(self.nodes, {n for n, s in self.registries.items() if s == "restarting"})
        pods = len(self.pods)
        text = Text()
        text.append(f"{len(nodes)} nodes, {ready} Ready", "bold")
        text.append(f" · {up}/{total} servers up")
        if down:
            text.append(f" (down: {', '.join(down[:3])}{'…' if len(down) > 3 else ''})", "bold red")
        text.append(f" · wizard pods: {pods}" if pods else " · no wizard pods")
        text.append(f" · {self.connection}", "dim")
        self.query_one("#cluster-summary", Static).update(text)
