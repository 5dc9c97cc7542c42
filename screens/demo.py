"""``ghcr2gitea demo``: the wizard's window on an embedded sandbox.

Until the full stage screens land, this shows the stage list and the sandbox's nodes,
live from a watch on the Kubernetes API (not polled).
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Label, ListItem, ListView, Static

from wizard.kube import NodeInfo, NodeWatch, api_client
from wizard.stages import STAGES

READY_TEXT = {"True": "Ready", "False": "NotReady", "Unknown": "Unknown"}


class WizardApp(App):
    """Stage list beside the live cluster panel."""

    CSS_PATH = "app.tcss"
    TITLE = "ghcr2gitea"
    BINDINGS = [Binding("q", "quit", "Quit"), Binding("d", "toggle_dark", "Dark/light")]

    def __init__(self, kubeconfig: str, subtitle: str = ""):
        super().__init__()
        self.kubeconfig = kubeconfig
        self.sub_title = subtitle
        self._lock = threading.Lock()
        self._pending: dict[str, NodeInfo | None] = {}
        self._flush_scheduled = False
        self._watch: NodeWatch | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            stages = ListView(*(ListItem(Label(f"○ {s.title}")) for s in STAGES), id="stages")
            stages.border_title = "Stages"
            yield stages
            with Vertical(id="nodes-panel") as panel:
                panel.border_title = "Nodes (live)"
                yield DataTable(id="nodes", cursor_type="row")
        yield Static("connecting…", id="status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#nodes", DataTable)
        for key, label in (("name", "Node"), ("role", "Role"), ("ready", "Ready"), ("kubelet", "Kubelet"),
                           ("ip", "InternalIP")):
            table.add_column(label, key=key)
        self._watch = NodeWatch(api_client(self.kubeconfig), self._changed, self._status).start()

    def on_unmount(self) -> None:
        if self._watch:
            self._watch.stop()

    # called from the watch thread: coalesce bursts into one UI update
    def _changed(self, nodes: list[NodeInfo], deleted: list[str]) -> None:
        with self._lock:
            for n in nodes:
                self._pending[n.name] = n
            for name in deleted:
                self._pending[name] = None
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self.call_from_thread(self._flush)

    def _status(self, text: str) -> None:
        self.call_from_thread(lambda: self.query_one("#status", Static).update(f"cluster: {text}"))

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending, self._flush_scheduled = self._pending, {}, False
        table = self.query_one("#nodes", DataTable)
        for name, info in sorted(pending.items()):
            if info is None:
                if name in table.rows:
                    table.remove_row(name)
                continue
            cells = (info.name, info.role, READY_TEXT.get(info.ready, info.ready), info.kubelet, info.internal_ip)
            if name in table.rows:
                for key, value in zip(("name", "role", "ready", "kubelet", "ip"), cells, strict=True):
                    table.update_cell(name, key, value)
            else:
                table.add_row(*cells, key=name)

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"


def run_demo(directory: str | None, opts) -> int:
    from wizard.sandbox.server import Sandbox
    tmp = None
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="ghcr2gitea-demo-")
        directory = tmp.name
    sb = Sandbox(Path(directory), opts).start()
    try:
        WizardApp(str(sb.kubeconfig), subtitle=f"demo on the sandbox ({len(sb.cluster.nodes)} nodes)").run()
    finally:
        sb.stop()
        if tmp:
            tmp.cleanup()
    return 0
