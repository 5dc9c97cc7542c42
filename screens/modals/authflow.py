"""The Docker v2 token flow, hop by hop, from each vantage point, with the diagnosis highlighted.

From this machine each hop is a request with its status, the headers that matter
(Www-Authenticate, Location, Content-Type) and the TLS chain seen; from a pod (Kaniko's view)
and from each node's containerd the wizard sees what those report: a status, a log, a pull
result. A failed check's cause and fix stand out, and so does the hop where the flow broke.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from wizard.stages.base import Check

from ..widgets.keys import KeyScroll
from .help import HELP_KEYS

# the Verify stage's two pulls per node (wizard/stages/verify.py): a pod's, through the kubelet with the pull
# secret, and containerd's own (k3s crictl pull) with the registries.yaml the node loaded
POD_PULL, NODE_PULL = ": pull-test pod pulls ", ": containerd on the node pulls "


def vantage(check: Check) -> str:
    ev = check.evidence if isinstance(check.evidence, dict) else {}
    if ev.get("hops"):
        return "this machine"
    if check.name.startswith("Kaniko"):
        return "a pod, as Kaniko sees it"
    if POD_PULL in check.name:
        return f"a pull-test pod on node {check.name.split(':', 1)[0]}"
    if NODE_PULL in check.name:
        return f"node {check.name.split(':', 1)[0]} (containerd)"
    return "the cluster"


def flow_checks(checks: list[Check]) -> list[Check]:
    """The checks that walk (part of) the token flow."""
    out = []
    for c in checks:
        ev = c.evidence if isinstance(c.evidence, dict) else {}
        if ev.get("hops") or c.name.startswith("Kaniko") or POD_PULL in c.name or "request" in ev:
            out.append(c)
    return out


def render_flow(check: Check, shown) -> Text:
    ev = check.evidence if isinstance(check.evidence, dict) else {}
    bad = check.status == "fail"
    text = Text()
    text.append(f"{vantage(check)} — ", "bold")
    text.append(shown(check.name), "bold")
    text.append("  ✓ pass\n" if check.status == "pass" else f"  {check.status.upper()}\n",
                "bold green" if check.status == "pass" else "bold red" if bad else "yellow")
    if bad:  # the diagnosis first: it is what the operator came for
        text.append(" diagnosis ", "bold reverse red")
        text.append(" " + shown(check.cause) + "\n", "bold red")
        if check.fix:
            text.append(" fix ", "bold reverse green")
            text.append(" " + shown(check.fix) + "\n", "bold green")
    hops = ev.get("hops") or []
    if not hops and ("request" in ev or "status" in ev):
        hops = [{"step": "request", "request": ev.get("request", ""), "status": ev.get("status"), "headers": {},
                 "error": "", "cert": ""}]
    for n, hop in enumerate(hops, 1):
        last = n == len(hops)
        broke = bool(hop.get("error")) or (bad and last)
        status = hop.get("status")
        line = Text(f"  {n}. {shown(hop.get('step', ''))}\n", "bold red" if broke else "bold")
        line.append(f"     → {shown(str(hop.get('request', '')))}\n")
        line.append("     ← ")
        if status is None:
            line.append(f"no answer: {shown(hop.get('error', ''))}", "bold red")
        else:
            ok = 200 <= int(status) < 300 or (int(status) == 401 and not broke)
            line.append(str(status), "bold green" if ok else "bold red" if broke else "yellow")
        if hop.get("ms") is not None:
            line.append(f"  {hop['ms']:.0f} ms", "dim")
        line.append("\n")
        for k, v in (hop.get("headers") or {}).items():
            line.append(f"       {k}: {shown(str(v))}\n", "cyan")
        if hop.get("tls"):
            line.append(f"       TLS: {shown(hop['tls'])}\n", "magenta")
        if hop.get("cert"):
            line.append(f"       cert: {shown(hop['cert'])}\n", "magenta")
        text.append(line)
    for key in ("log", "message", "imageID", "phase"):
        if ev.get(key):
            text.append(f"  {key}: {shown(str(ev[key]))[-300:]}\n", "dim")
    return text


class AuthFlowScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close"), Binding("f", "close", "Close", show=False),
                Binding("q", "close", "Close", show=False)] + HELP_KEYS

    def __init__(self, stage_title: str, checks: list[Check], shown):
        super().__init__()
        self.stage_title, self.checks, self.shown = stage_title, flow_checks(checks), shown

    def compose(self) -> ComposeResult:
        with Vertical(id="flow-box") as box:
            box.border_title = f"Auth flow — {self.stage_title}"
            box.border_subtitle = "esc to close"
            with KeyScroll(id="flow-scroll"):
                if not self.checks:
                    yield Static("This stage's checks do not walk the token flow.", classes="flow")
                for c in self.checks:
                    yield Static(render_flow(c, self.shown), classes="flow -fail" if c.status == "fail" else "flow")

    def on_mount(self) -> None:
        self.query_one("#flow-scroll").focus()  # the keys scroll at once (arrows, PageUp/PageDown, Home/End, j/k)

    def action_close(self) -> None:
        self.dismiss(None)
