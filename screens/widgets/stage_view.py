"""One stage: what it does, what it found, what it will change, the rollout (restart), the checks, the gate."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static, TabbedContent, TabPane

from wizard.session import Session

from .checks import ChecksView
from .copies import CopiesView
from .keys import KeyScroll
from .rollout import RolloutView


def diff_text(diff: str) -> Text:
    out = Text()
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        else:
            style = "dim"
        out.append(line + "\n", style)
    return out


def warning_line(warns: list) -> str:
    """'warning: <check> — safer: <option>' for the stage's advisory checks (the safer option is the check's own
    evidence, e.g. registry.node_tls: ca)."""
    parts = []
    for c in warns:
        safer = c.evidence.get("safer") if isinstance(c.evidence, dict) else None
        parts.append(c.name + (f" — safer: {safer}" if safer else ""))
    return ("warning: " if len(parts) == 1 else f"{len(parts)} warnings: ") + "; ".join(parts) + " (see Checks)"


ACTION = {"create": "bold green", "update": "bold yellow", "write": "bold yellow", "restart": "bold cyan",
          "delete": "bold red", "conflict": "bold red"}


class StageView(Vertical):
    """Rendered from the session's StageState; the buttons call the app's actions."""

    def __init__(self, shown: Callable[[str], str], audit: bool, **kw):
        super().__init__(**kw)
        self.shown = shown
        self.audit = audit
        self.index = -1
        self._seen: dict[int, tuple] = {}  # (planned, verified, error) when last shown

    def compose(self) -> ComposeResult:
        yield Static("", id="stage-head")
        with TabbedContent(id="tabs", initial="tab-overview"):
            with TabPane("Overview", id="tab-overview"), KeyScroll(id="overview-scroll"):
                yield Static("", id="about")
                yield Static("", id="found")
            with TabPane("Changes", id="tab-changes"), KeyScroll(id="changes-scroll"):
                yield CopiesView(id="copies")  # a bar per image while stage Images copies
                yield Static("", id="changes")
            with TabPane("Rollout", id="tab-rollout"):
                yield RolloutView(id="rollout-view")
            with TabPane("Checks", id="tab-checks"):
                yield ChecksView(self.shown, id="checks-view")
        with Horizontal(id="actions"):
            if not self.audit:
                yield Button("Apply", id="apply", variant="warning", compact=True, action="app.apply")
                yield Button("Pause", id="pause", compact=True, action="app.pause")
                yield Button("Abort", id="abort", variant="error", compact=True, action="app.abort")
            yield Button("Re-check", id="recheck", compact=True, action="app.recheck")
            if not self.audit:
                yield Button("Override", id="override", compact=True, action="app.override")
                yield Button("Next ▶", id="next", variant="success", compact=True, action="app.next")
            yield Label("", id="gate")

    def on_mount(self) -> None:
        self.query_one(TabbedContent).hide_tab("tab-rollout")

    # ------------------------------------------------------------------ rendering
    def show_stage(self, session: Session, i: int, *, switch: str | None = None) -> None:
        st = session.states[i]
        entering = i != self.index
        self.index = i
        n = session.stage_count
        state = session.status(i)
        head = Text()
        head.append(f"Stage {i + 1}/{n} · ", "dim")
        head.append(st.title, "bold")
        head.append(f" · guide: {st.stage.guide_step}", "dim")
        if st.busy:
            head.append(f"  {st.busy}…", "bold cyan")
        elif state == "done":
            head.append("  done", "bold green")
        elif state == "overridden":
            head.append("  done, with an override", "bold magenta")
        elif state == "paused":
            head.append("  paused", "bold yellow")
        # its own line, so it is never cut: what was passed over, what is paused
        over = session.overridden(i)
        if over:
            head.append("\n⚠ overridden: " + self.shown(", ".join(o.check for o in over)), "bold magenta")
            if st.changes and not st.applied:
                head.append(f" — its {len(st.changes)} change(s) are still to be applied", "magenta")
        # advisories (status warn) never close Next, so they are said here, where they cannot be missed
        warns = [c for c in st.checks or [] if c.status == "warn"]
        if warns:
            head.append("\n! " + self.shown(warning_line(warns)), "bold yellow")
        if state == "paused":
            head.append("\n‖ " + session.paused_line(i), "bold yellow")
        elif state == "failed":
            head.append("  failed", "bold red")
        self.query_one("#stage-head", Static).update(head)

        about = Text()
        about.append("What it does\n", "bold underline")
        about.append(st.stage.description + "\n")
        self.query_one("#about", Static).update(about)
        found = Text()
        found.append("\nWhat it found\n", "bold underline")
        if st.found is None:
            found.append("inspecting…\n" if st.busy else "not inspected yet\n", "dim")
        for line in st.found or []:
            found.append("• " + self.shown(line) + "\n")
        if st.error is not None and st.checks is None:
            found.append(f"\n✗ {self.shown(st.error.name)}: {self.shown(st.error.cause)}\n", "bold red")
            if st.error.fix:
                found.append(f"fix: {self.shown(st.error.fix)}\n", "green")
        self.query_one("#found", Static).update(found)

        changes = Text()
        if st.changes is None:
            changes.append("planning…" if st.busy else "not planned yet", "dim")
        elif not st.changes:
            changes.append("Nothing to change: the cluster already matches the plan for this stage." if not
                           st.applied else "Applied; the cluster now matches the plan for this stage.", "green")
        else:
            changes.append(f"{len(st.changes)} change(s)" + (" (audit: shown, never applied)" if self.audit else
                                                              " — press a to apply") + "\n\n", "bold")
            for ch in st.changes:
                changes.append(f"{ch.action:<8}", ACTION.get(ch.action, "bold"))
                changes.append(self.shown(ch.target) + "\n", "bold")
                if ch.note:  # a conflict's cause and fix; an adoption or an additive change, said
                    changes.append(" " * 8 + self.shown(ch.note) + "\n", "red" if ch.action == "conflict" else "yellow")
                if ch.diff:
                    changes.append(diff_text(self.shown(ch.diff)))
                changes.append("\n")
        self.query_one("#changes", Static).update(changes)
        self.query_one(CopiesView).show_stage(st.key)
        if entering or self._seen.get(i, (False,))[0] != (st.changes is not None):
            # another stage, or a new plan: its diff from the top, not the last one's scroll offset
            for pane in ("#changes-scroll", "#overview-scroll"):
                self.query_one(pane, KeyScroll).scroll_home(animate=False, immediate=True)

        tabs = self.query_one(TabbedContent)
        if st.view == "rollout":
            tabs.show_tab("tab-rollout")
        else:
            tabs.hide_tab("tab-rollout")
        tabs.get_tab("tab-changes").label = f"Changes ({len(st.changes)})" if st.changes else "Changes"
        overridden = {o.check for o in session.overridden(i)}
        checks = list(st.checks or []) if st.checks is not None or st.error is None else []
        if st.error is not None and st.error.name not in {c.name for c in checks}:
            checks.insert(0, st.error)
        self.query_one(ChecksView).show(checks if (st.checks is not None or st.error is not None) else None,
                                        overridden=overridden, state=st.busy)
        fails = sum(c.status == "fail" for c in checks)
        passes = sum(c.status == "pass" for c in checks)
        warns = sum(c.status == "warn" for c in checks)
        label = "Checks"
        if checks:
            label = f"Checks ✓{passes}" + (f" ✗{fails}" if fails else "") + (f" !{warns}" if warns else "")
        tabs.get_tab("tab-checks").label = label
        # follow the stage: to the changes once planned, to the checks once verified
        before = self._seen.get(i, (False, False, None))
        now = (st.changes is not None, st.checks is not None, st.error)
        self._seen[i] = now
        if switch:
            tabs.active = switch
        elif (now[1] and not before[1]) or (now[2] is not None and now[2] != before[2] and st.view != "rollout"):
            tabs.active = "tab-checks"  # verified, or an apply failed: what passed, what did not, and why
        elif now[0] and not before[0] and st.changes:
            tabs.active = "tab-changes"
        elif entering:
            tabs.active = "tab-changes" if st.changes and st.checks is None else \
                "tab-checks" if st.checks is not None else "tab-overview"
        self.update_actions(session, i)

    def update_actions(self, session: Session, i: int) -> None:
        st = session.states[i]
        current = i == session.current and not st.done
        applying = st.busy == "applying"
        gate = self.query_one("#gate", Label)
        if self.audit:
            self.query_one("#recheck", Button).disabled = bool(st.busy)
            gate.update(Text("audit: read-only — nothing is applied", "bold yellow"))
            return
        restart = st.view == "rollout" and applying
        for bid, show in (("#apply", current and not restart and (bool(st.changes) or applying)),
                          ("#pause", restart), ("#abort", applying),
                          ("#override", current and not applying), ("#next", current and not applying)):
            self.query_one(bid, Button).display = show
        self.query_one("#apply", Button).disabled = bool(st.busy) or not st.changes
        self.query_one("#recheck", Button).disabled = bool(st.busy)
        self.query_one("#override", Button).disabled = bool(st.busy) or not session.blocking(i)
        self.query_one("#pause", Button).disabled = session.pausing
        ok = session.can_advance(i)
        nxt = self.query_one("#next", Button)
        nxt.disabled = not ok
        nxt.label = "Finish ✓" if i == session.stage_count - 1 else "Next ▶"
        if st.done and session.overridden(i):
            gate.update(Text("done — overridden: " + self.shown(", ".join(o.check for o in session.overridden(i))),
                             "magenta"))
        elif st.done:
            gate.update(Text("done", "green"))
        elif not current:
            gate.update(Text("locked", "dim"))
        elif ok:
            warns = sum(c.status == "warn" for c in st.checks or [])
            gate.update(Text("all gating checks pass", "bold green") +
                        (Text(f" · {warns} warning(s)", "bold yellow") if warns else Text()))
        else:
            gate.update(Text(session.next_reason(i), "yellow"))

    @on(TabbedContent.TabActivated)
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        event.stop()
