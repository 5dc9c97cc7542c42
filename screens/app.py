"""The wizard: a stage list beside the current stage, the live cluster below, a log pane on demand.

It renders what the engine reports and calls the engine — through ``wizard.session`` — in
thread workers, because the engine is synchronous. Everything the engine says reaches the
screen through coalescers, so a burst of node events or restart progress costs one redraw per
frame. Every text shown passes ``shown()``: the token is masked there, whatever its source.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, RichLog, Static

from wizard.session import ROLLBACK, ROTATION, Aborted, Session
from wizard.stages import STAGES
from wizard.stages.base import Progress

from .coalesce import Coalescer
from .modals.adopt import AdoptScreen
from .modals.authflow import AuthFlowScreen, flow_checks
from .modals.help import HelpScreen, key_name
from .modals.override import OverrideScreen
from .modals.quit import QuitScreen
from .modals.report import ReportScreen
from .modals.resume import FreshResumeScreen, ResumeScreen
from .modals.rollback import RollbackConfirmScreen, RollbackScreen
from .modals.rotate import RotateTokenScreen, RotationScreen
from .widgets.checks import ChecksView
from .widgets.cluster_panel import ClusterPanel
from .widgets.copies import CopiesView
from .widgets.keys import KeyLog
from .widgets.rollout import RolloutView
from .widgets.stage_list import StageList
from .widgets.stage_view import StageView

NO_PLAN = ("No migration plan given.\n\n"
           "Make one from this cluster:\n"
           "    ghcr2gitea init --out plan.yaml\n"
           "check its CHANGE-ME values, then open the wizard with it:\n"
           "    ghcr2gitea --plan plan.yaml\n\n"
           "Meanwhile the cluster panel below is live.")


# the exit code after quitting while something was being applied: the run was interrupted (as Ctrl-C in the
# headless apply, docs/usage.md "Exit code"); the same command resumes it
INTERRUPTED = 130


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


class WizardApp(App):
    """The migration wizard (and, with an audit session, the read-only audit)."""

    CSS_PATH = "app.tcss"
    TITLE = "ghcr2gitea"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-medium"), (45, "-tall")]
    AUTO_FOCUS = "#stages"
    BINDINGS = [
        Binding("a", "apply", "Apply"),
        Binding("n", "next", "Next"),
        Binding("v", "recheck", "Re-check"),
        Binding("o", "override", "Override"),
        Binding("t", "adopt", "Adopt", show=False),
        Binding("r", "rotate_token", "Rotate token", show=False),
        Binding("b", "rollback", "Roll back", show=False),
        Binding("p", "pause", "Pause"),
        Binding("x", "abort", "Abort"),
        Binding("f", "auth_flow", "Auth flow"),
        # Help and Quit before the pane toggles: at 80 columns the footer cuts its end, and ? leads to the rest
        Binding("question_mark", "help", "Help"),
        Binding("f1", "help", "Help", show=False),
        Binding("q", "quit", "Quit"),
        Binding("l", "toggle_log", "Log"),
        Binding("e", "export", "Export"),
        Binding("c", "toggle_cluster", "Cluster", show=False),
        Binding("d", "toggle_dark", "Dark/light", show=False),
        # a binding that is shown disabled does not run: these, tried next for the same key, say why
        *(Binding(k, f"why_not('{action}')", show=False) for k, action in
          (("a", "apply"), ("n", "next"), ("o", "override"), ("t", "adopt"), ("r", "rotate_token"), ("b", "rollback"),
           ("p", "pause"),
           ("x", "abort"))),
    ]
    ACTIONS_HELP = {  # command palette: every action, with what it does
        "apply": ("Apply", "Apply the current stage's planned changes"),
        "next": ("Next stage", "Open the next stage (only when every gating check passes)"),
        "recheck": ("Re-check", "Inspect, plan and verify the stage shown again"),
        "override": ("Override a failed check", "Pass over a failed gating check (typed confirmation, recorded)"),
        "adopt": ("Adopt an object", "Let the wizard change an existing object it does not own (type its name; "
                  "recorded)"),
        "rotate_token": ("Rotate the Gitea token", "Put a new Gitea token in both Secrets and on every node, "
                         "restart and prove each node, verify pulls with it; then the old token may be revoked "
                         "(the new token's file, typed confirmation)"),
        "rollback": ("Roll the migration back", "Workloads on their original images, every node's registries.yaml "
                     "as it was, every node restarted and proven, the wizard's objects removed (typed "
                     "confirmation); the images in Gitea stay"),
        "pause": ("Pause the rollout", "Finish the node restarting now, then stop"),
        "abort": ("Abort", "Stop what is being applied at the next safe point"),
        "auth_flow": ("Auth flow", "The token flow hop by hop, per vantage point, with the diagnosis"),
        "toggle_log": ("Log", "Open or close the log pane"),
        "export": ("Export report", "Write the report as JSON and Markdown"),
        "report": ("Report", "Show the report of every stage and the overrides"),
        "toggle_cluster": ("Cluster panel", "Show or hide the live cluster panel"),
        "toggle_dark": ("Dark/light theme", "Switch between the dark and the light theme"),
        "help": ("Help", "List every key of this screen and what it does (Esc closes it, and every dialog)"),
        "quit": ("Quit", "Leave the wizard; while something is applied it asks first, says what finishes first, "
                 "and prints how to resume"),
    }

    def __init__(self, session: Session | None, *, api_factory: Callable | None = None, subtitle: str = "",
                 export_dir: str | Path | None = None, shown: Callable[[str], str] | None = None,
                 blink: bool = True, resume: bool = True, log_clock: Callable[[float], str] = clock,
                 problem: str = "", resume_command: str = "", ends_with_app: str = "", start_fresh: str = ""):
        super().__init__()
        # the resume offer's other choice when the cluster can be made anew (the demo): what it does; choosing it
        # ends the app with fresh_asked set, for the caller to start a new cluster
        self.start_fresh, self.fresh_asked = start_fresh, False
        self.resume_command = resume_command  # what to run again to resume (printed after quitting mid-apply)
        # the cluster ends with the app (the demo's in-memory sandbox): what to say instead of "resume"
        self.ends_with_app = ends_with_app
        self.exit_note = ""  # one line the CLI prints after the screen is gone
        self._quitting = False
        self.session = session
        self.audit = bool(session and session.audit)
        self.api_factory = api_factory
        self.sub_title = subtitle
        self.export_dir = Path(export_dir) if export_dir else Path.cwd()
        self._extra_filter = shown
        self.blink = blink
        self.offer_resume = resume
        self.log_clock = log_clock
        self.problem = problem
        self.viewing = 0
        self.exported: list[Path] = []
        self._watches: list = []
        self._last_message: dict[str, str] = {}
        self.log_lines: deque[str] = deque(maxlen=5000)  # what the log pane holds, as plain text
        self.events = Coalescer(self, self._flush_session)
        if session is not None:
            session.on_stage = lambda i: self.events.put(("stage", i), True)
            session.on_progress = self._progress

    # ------------------------------------------------------------------ helpers
    def shown(self, text: str) -> str:
        """Every text that reaches the screen: secrets masked (and the tests' filter, if any)."""
        text = self.session.mask(str(text)) if self.session else str(text)
        return self._extra_filter(text) if self._extra_filter else text

    @property
    def titles(self) -> list[str]:
        return [s.title for s in (self.session.states if self.session else [])] or [s.title for s in STAGES]

    def compose(self) -> ComposeResult:
        yield Header()
        if self.audit:
            yield Static(Text(" AUDIT — read-only: nothing is changed, there is no Apply. e exports the report. ",
                              "bold"), id="banner")
        with Horizontal(id="body"):
            yield StageList(self.titles, id="stages")
            with Vertical(id="main"):
                if self.session is not None:
                    yield StageView(self.shown, self.audit, id="stage")
                else:
                    yield Static(self.problem or NO_PLAN, id="no-plan")
                yield ClusterPanel(id="cluster")
        yield KeyLog(id="log", max_lines=5000, wrap=True, markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        # Kept references: while a dialog is up, query_one looks in the dialog, and the engine's
        # progress still arrives; the flush must reach the main screen's widgets, not search for them.
        self.log_view = self.query_one("#log", RichLog)
        self.log_view.border_title = "Log"
        self.stage_list = self.query_one(StageList)
        self.panel = self.query_one(ClusterPanel)
        if self.session is not None:
            self.stage_view = self.query_one(StageView)
            self.rollout = self.query_one(RolloutView)
            self.copies = self.query_one(CopiesView)
        if self.session is None:
            for i in range(len(self.titles)):
                self.query_one(StageList).set_state(i, "locked", viewable=False)
        else:
            self._refresh_list()
            self.query_one(StageView).show_stage(self.session, 0)
        self._start_watches()
        if self.session is not None:
            if self.audit:
                self._audit_all()
            else:
                self._startup()

    def on_resize(self, event) -> None:
        # below 110 columns the footer has no room for "^p palette": Help lists Ctrl+P instead
        want = event.size.width >= 110
        for footer in self.screen_stack[0].query(Footer):
            if footer.show_command_palette != want:
                footer.show_command_palette = want
                footer.refresh(recompose=True)  # not a recomposing reactive in Textual's Footer

    def _start_watches(self) -> None:
        if self.api_factory is None:
            return
        panel = self.query_one(ClusterPanel)
        try:
            from wizard.watches import node_watch, pod_watch
            self._watches = [node_watch(self.api_factory(), panel.nodes_changed, panel.status_changed).start(),
                             pod_watch(self.api_factory(), panel.pods_changed).start()]
        except Exception as e:  # noqa: BLE001 - no live panel is no reason to have no wizard
            panel.status_changed(f"no live view: {self.shown(str(e))}")

    def on_unmount(self) -> None:
        for w in self._watches:
            w.stop()
        if self.session is not None:
            self.session.close(wait=15)

    # ------------------------------------------------------------------ engine → screen
    def _progress(self, p: Progress) -> None:
        """From a worker thread: per-node progress is coalesced by node; every message goes to the log."""
        if p.node and p.phase:
            self.events.put(("node", p.node), p)
        if p.transfer is not None:  # an image copy: its latest bytes and blobs, one redraw per flush
            self.events.put(("copy", p.stage, p.transfer.image), p.transfer)
        key = p.node or p.stage
        if p.message and self._last_message.get(key) != p.message:
            self._last_message[key] = p.message
            self.events.append(p)

    @on(Coalescer.Ready)
    def _coalesced(self, event: Coalescer.Ready) -> None:
        event.coalescer.ready()

    def _flush_session(self, latest: dict, items: list) -> None:
        s = self.session
        if s is None or not self.is_running:
            return  # shutting down: the screens are gone while the engine's last lines still arrive
        for p in items:
            line = Text(f"{self.log_clock(p.time)} ", "dim")
            line.append(f"{p.stage:<11}", "cyan")
            line.append(self.shown(p.message))
            self._write_log(line)
        runs = {k[1]: v for k, v in latest.items() if k[0] == "node"}
        if runs:
            self.rollout.update_runs(runs)
        copies = {k[1:]: v for k, v in latest.items() if k[0] == "copy"}
        if copies:
            self.copies.update_copies(copies)
        stages = sorted(k[1] for k in latest if k[0] == "stage")
        if stages:
            self._refresh_list()
            if self.viewing in stages or s.current in stages:
                self.stage_view.show_stage(s, self.viewing, switch=self._switch_to(self.viewing))
            self.refresh_bindings()
        if runs or stages:
            panel = self.panel
            panel.set_registries(s.registries_states())
            self.rollout.set_nodes(panel.nodes)

    def _switch_to(self, i: int) -> str | None:
        st = self.session.states[i]
        if st.busy == "applying" and st.view == "rollout":
            return "tab-rollout"
        if st.busy == "verifying":
            return "tab-checks"
        return None

    def _refresh_list(self) -> None:
        s = self.session
        lst = self.stage_list
        for i in range(s.stage_count):
            note = f"overridden ({len(s.overridden(i))})" if len(s.overridden(i)) > 1 else \
                "overridden" if s.overridden(i) else ""
            if s.status(i) == "paused":
                note = "paused — Apply resumes"
            lst.set_state(i, s.status(i), note=note, viewable=s.viewable(i))
        lst.highlighted = self.viewing

    def _view(self, i: int) -> None:
        self.viewing = i
        self.stage_list.highlighted = i
        self.stage_view.show_stage(self.session, i)
        self.refresh_bindings()

    @on(StageList.Chosen)
    def _chosen(self, event: StageList.Chosen) -> None:
        if self.session is None:
            return
        if not self.session.viewable(event.index):
            self.notify(f"{self.titles[event.index]} is locked: finish {self.titles[self.session.current]} first",
                        severity="warning")
            return
        self._view(event.index)

    @on(ChecksView.Highlighted)
    def _check_highlighted(self, event: ChecksView.Highlighted) -> None:
        self.refresh_bindings()

    # ------------------------------------------------------------------ workers (the engine is synchronous)
    def _busy(self) -> bool:
        return self.session is not None and bool(self.session.operation or any(st.busy for st in self.session.states))

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Aborted:
            pass
        except Exception as e:  # noqa: BLE001 - a worker must never take the app down; say what happened
            self.call_from_thread(self.notify, self.shown(f"{type(e).__name__}: {e}"), severity="error",
                                  timeout=10)

    @work(thread=True, group="engine", exit_on_error=False)
    def _startup(self) -> None:
        def run():
            s = self.session
            offer = s.find_unfinished() if self.offer_resume else None
            if offer is not None:
                self.call_from_thread(self.notify, "an unfinished migration was found: re-inspecting the cluster…")
                s.reinspect(offer)
                self.call_from_thread(self._offer_resume, offer)
                return
            s.open_stage(0)
        self._guard(run)

    def _offer_resume(self, offer) -> None:
        titles = {st.key: st.title for st in self.session.states}

        def answer(resume: bool | None) -> None:
            if not resume and self.start_fresh:
                self.fresh_asked = True
                self.exit(None, 0)
                return
            if resume:
                i = self.session.resume(offer)
                self._log(f"resuming at {self.titles[i]} (journal: {', '.join(offer.done) or 'nothing'} done)")
            else:
                self.session.start_over()
                i = 0
                self._log("starting over (the cluster keeps what was applied)")
            self._refresh_list()
            self._view(i)
            self._open(i)
        offer_screen = FreshResumeScreen if self.start_fresh else ResumeScreen
        self.push_screen(offer_screen(offer, titles, fresh=self.start_fresh), answer)

    @work(thread=True, group="engine", exit_on_error=False)
    def _open(self, i: int) -> None:
        self._guard(self.session.open_stage, i)

    @work(thread=True, group="engine", exit_on_error=False)
    def _audit_all(self) -> None:
        self._guard(self.session.audit_all)
        self.call_from_thread(self.notify, "audit finished: e exports the report (JSON and Markdown)")

    @work(thread=True, group="engine", exit_on_error=False)
    def _apply(self, i: int) -> None:
        self._guard(self.session.apply_stage, i)

    @work(thread=True, group="engine", exit_on_error=False)
    def _recheck(self, i: int) -> None:
        self._guard(self.session.recheck, i)

    @work(thread=True, group="engine", exit_on_error=False)
    def _advance(self) -> None:
        def run():
            s = self.session
            s.advance()
            if s.complete:
                self.call_from_thread(self._finished)
                return
            self.call_from_thread(self._view, s.current)
            s.open_stage(s.current)
        self._guard(run)

    @work(thread=True, group="engine", exit_on_error=False)
    def _override(self, check, typed: str) -> None:
        self._guard(self.session.override, check, typed)

    @work(thread=True, group="engine", exit_on_error=False)
    def _adopt(self, ref, typed: str) -> None:
        def run():
            i = self.session.current
            self.session.adopt(ref.kind, ref.namespace, ref.name, typed)
            self.session.recheck(i)
        self._guard(run)

    def _finished(self) -> None:
        self._refresh_list()
        self._log("migration finished: every stage verified")
        self.push_screen(ReportScreen(self.session, "Migration finished"))

    def _log(self, text: str) -> None:
        line = Text(f"{self.log_clock(time.time())} ", "dim")
        line.append(self.shown(text))
        self._write_log(line)

    def _write_log(self, line: Text) -> None:
        self.log_lines.append(line.plain)
        log = getattr(self, "log_view", None)
        if log is not None and log.is_attached:  # not yet mounted, or torn down while a run unwinds
            log.write(line)

    # ------------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """False hides a binding (not applicable here), None shows it disabled (not yet)."""
        if self.screen is not self.screen_stack[0]:
            return action in ("quit", "toggle_dark", "export", "help")  # a modal is open: its own keys lead
        s = self.session
        if s is None:
            return action not in ("apply", "next", "override", "adopt", "pause", "abort", "recheck", "auth_flow", "export",
                                  "report")
        st = s.states[self.viewing]
        current = self.viewing == s.current and not st.done
        if action == "apply":
            if s.audit or not current:
                return False
            return True if st.changes and not st.busy else None
        if action == "next":
            if s.audit or not current:
                return False
            return True if s.can_advance(self.viewing) else None
        if action == "override":
            if s.audit or not current:
                return False
            return True if s.blocking(self.viewing) and not st.busy else None
        if action == "adopt":
            if s.audit or not current:
                return False
            return True if _conflict(st) is not None and not st.busy else None
        if action == "why_not":
            return True
        if action in ("pause", "abort"):
            return st.busy == "applying" and (action == "abort" or st.view == "rollout") and not s.audit
        if action == "recheck":
            return None if st.busy else True
        if action == "auth_flow":
            return bool(flow_checks(st.checks or []))
        if action in ("rotate_token", "rollback"):
            return False if s.audit else None if self._busy() else True
        return True

    def action_why_not(self, action: str) -> None:
        """The key of an action that is closed now: say why (the action's own checks notify the reason)."""
        s = self.session
        if s is None:
            self.notify("no migration plan: open the wizard with --plan FILE", severity="warning")
        elif s.audit:
            self.notify("audit mode is read-only: there is no " + action.title(), severity="warning")
        elif action in ("pause", "abort"):
            st = s.states[self.viewing]
            self.notify("nothing is being applied" if st.busy != "applying" else
                        "Pause is for the rolling restart: x aborts", severity="warning")
        else:
            getattr(self, f"action_{action}")()

    def action_apply(self) -> None:
        s = self.session
        if s is None or s.audit:
            self.notify("audit mode is read-only: there is no Apply", severity="warning")
            return
        i = self.viewing
        if i != s.current or s.states[i].done:
            self.notify("only the current stage can be applied", severity="warning")
            return
        st = s.states[i]
        if self._busy():
            self.notify(self._busy_line(), severity="warning")
            return
        if not st.changes:  # say why, instead of nothing
            what = "not planned yet: press v to re-check" if st.changes is None else \
                "nothing to apply: the cluster already matches the plan for this stage"
            gate = "Next is open" if s.can_advance(i) else s.next_reason(i)
            self.notify(self.shown(f"{what} — {gate}"), severity="warning")
            return
        self.copies.reset(s.states[i].key)  # a new apply's bars, not the last one's
        if s.states[i].view == "rollout":
            self.query_one(RolloutView).reset()
            self.query_one("#tabs").active = "tab-rollout"
        self._log(f"{s.states[i].title}: applying {len(s.states[i].changes)} change(s)")
        self._apply(i)

    def action_next(self) -> None:
        s = self.session
        if s is None or s.audit:
            return
        if self.viewing != s.current:
            self._view(s.current)
            self.notify(f"back to the current stage: {self.titles[s.current]}")
            return
        if not s.can_advance(self.viewing):
            reason = s.next_reason(self.viewing)
            self.notify(f"Next is closed: {self.shown(reason)}", severity="warning")
            return
        self._advance()

    def _busy_line(self) -> str:
        if self.session.operation:
            return f"{self.session.operation} is under way: wait for it (or x to abort)"
        st = next((st for st in self.session.states if st.busy), None)
        return f"{st.title} is {st.busy}: wait for it" + (" (or x to abort)" if st.busy == "applying" else "") \
            if st is not None else ""

    def action_recheck(self) -> None:
        if self.session is None:
            return
        if self._busy():
            self.notify(self._busy_line(), severity="warning")
            return
        self._recheck(self.viewing)

    def action_override(self) -> None:
        s = self.session
        if s is None or s.audit:
            return
        if self.viewing != s.current:
            self.notify(f"only the current stage ({self.titles[s.current]}) can be overridden", severity="warning")
            return
        if self._busy():
            self.notify(self._busy_line(), severity="warning")
            return
        blocking = s.blocking(self.viewing)
        if not blocking:
            self.notify("no failed gating check to override")
            return
        check = self.query_one(ChecksView).highlighted
        if check is None or check.name not in {c.name for c in blocking}:
            check = blocking[0]
        st = s.states[self.viewing]

        def done(result) -> None:
            if result:
                self._log(f"{st.title}: override of {result[0].name!r} confirmed")
                self._override(result[0], result[1])
        self.push_screen(OverrideScreen(st.title, st.key, check, self.shown, blink=self.blink), done)

    def action_adopt(self) -> None:
        s = self.session
        if s is None or s.audit or self.viewing != s.current or self._busy():
            return
        st = s.states[self.viewing]
        found = _conflict(st)
        if found is None:
            self.notify("nothing to adopt: no object of this stage belongs to someone else")
            return
        ref, cause = found

        def done(result) -> None:
            if result:
                self._log(f"{st.title}: adopting {result[0]} (typed confirmation)")
                self._adopt(result[0], result[1])
        self.push_screen(AdoptScreen(ref, cause, self.shown, blink=self.blink), done)

    def _day_two(self, noun: str, confirm, run, done) -> None:
        """A day-two operation: the ``confirm`` dialog (typed), then ``run(answer)``'s screen, then ``done(code)``;
        refused (and said why) in audit mode, without a plan, or while something is applied."""
        s = self.session
        if s is None or s.audit:
            self.notify(f"audit mode is read-only: there is no {noun}" if s else
                        "no migration plan: open the wizard with --plan FILE", severity="warning")
            return
        if self._busy():
            self.notify(self._busy_line(), severity="warning")
            return

        def chosen(answer) -> None:
            if answer is not None:
                self._log(f"{noun} confirmed (typed): its lines are on its screen")
                self.push_screen(run(answer), done)
        self.push_screen(confirm, chosen)

    def action_rotate_token(self) -> None:
        """Ask for the new token's file and the typed word, then rotate (Session.rotate_token, on its screen)."""
        self._day_two("token rotation", RotateTokenScreen(self.shown, blink=self.blink),
                      lambda new: RotationScreen(self.session, new, self.shown), self._rotated)

    def _rotated(self, code: int | None) -> None:
        self._log("token rotated: the old token may be revoked in Gitea" if code == 0 else
                  "token rotation did not finish: the old token is still needed")
        if code == 0:
            self._recheck(self.viewing)  # the Secrets and nodes changed: what the stage shows is read again

    def action_rollback(self) -> None:
        """Ask for the typed word, then roll back (Session.rollback, on its screen)."""
        self._day_two("rollback", RollbackConfirmScreen(self.shown, blink=self.blink),
                      lambda options: RollbackScreen(self.session, self.shown, **options), self._rolled_back)

    def _rolled_back(self, code: int | None) -> None:
        self._log("rolled back: the cluster is as it was before the migration" if code == 0 else
                  "the rollback did not finish: press b again to continue it")
        self._recheck(self.viewing)  # what the stage shows is read again

    def action_pause(self) -> None:
        if self.session is not None:
            self.session.pause()
            self._log("pause: the node restarting now finishes, then the rollout stops")
            self.notify("pausing after the current node")
            self.refresh_bindings()

    def action_abort(self) -> None:
        if self.session is not None and self._busy():
            self.session.abort()
            self._log("abort requested: stopping at the next safe point")
            self.notify("aborting…", severity="warning")

    async def action_quit(self) -> None:
        """Quit; while something is being applied, ask first and say what finishes before the wizard leaves."""
        if isinstance(self.screen, QuitScreen):
            return
        if self._quitting:
            self.notify("already quitting: waiting for the apply to stop at a safe point", severity="warning")
            return
        s = self.session
        if s is not None and s.operation:
            name = s.operation

            def operation_answer(yes: bool | None) -> None:
                if yes:
                    self._quit_mid_apply(name)
            self.push_screen(QuitScreen(name, self._finishes_first(None)), operation_answer)
            return
        applying = next((st for st in s.states if st.busy == "applying"), None) if s is not None else None
        if applying is None:
            self.exit()
            return
        first = self._finishes_first(applying)

        def answer(yes: bool | None) -> None:
            if yes:
                self._quit_mid_apply(applying.title)
        self.push_screen(QuitScreen(applying.title, first), answer)

    def _finishes_first(self, st) -> str:
        """What the wizard lets finish before it leaves, in the operator's words."""
        s = self.session
        if st is None or st.view == "rollout":  # None: the token rotation, whose rollout is the restart's
            moving = [n for n, p in s.node_phases.items() if p.phase in ("restarting", "waiting")]
            if moving:
                names = ", ".join(moving)
                return (f"{names} is restarting now: its k3s comes back on its own; the wizard stops waiting for "
                        f"its proofs, removes its restart pod and releases the cluster lock, then quits. The nodes "
                        f"not restarted yet are left as they are.")
            return ("no node is restarting this moment: the rollout stops before the next node, the wizard "
                    "removes its pods and releases the cluster lock, then quits. The nodes not restarted yet are "
                    "left as they are.")
        return ("the change being written now is finished, the wizard stops at the next safe point, removes its "
                "pods and releases the cluster lock, then quits.")

    def _quit_mid_apply(self, title: str) -> None:
        self._quitting = True
        self.session.abort()
        self._log(f"quit asked while applying {title}: stopping at the next safe point")
        self.notify(f"quitting: {title} stops at the next safe point…", severity="warning", timeout=30)
        again = f"run `{self.resume_command}` again" if self.resume_command else "run the same command again"
        if title == ROTATION:
            self.exit_note = ("ghcr2gitea: quit while rotating the Gitea token; the old token is still needed: do not "
                              f"revoke it — {again} and press r (or run ghcr2gitea rotate-token) to finish")
            self._leave_when_stopped()
            return
        if title == ROLLBACK:
            self.exit_note = (f"ghcr2gitea: quit during the rollback; nothing is lost — {again} and press b (or run "
                              "ghcr2gitea rollback) to finish it")
            self._leave_when_stopped()
            return
        self.exit_note = (f"ghcr2gitea: quit while applying {title}; {self.ends_with_app}" if self.ends_with_app else
                          f"ghcr2gitea: quit while applying {title}; nothing is lost — to resume, {again}: it "
                          "offers to continue where the cluster is")
        self._leave_when_stopped()

    @work(thread=True, group="quit", exit_on_error=False)
    def _leave_when_stopped(self) -> None:
        # the screen stays up (and says so) while the engine unwinds: a restarting node can take a while
        deadline = time.monotonic() + 120
        while self._busy() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.call_from_thread(self.exit, None, INTERRUPTED)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
            return
        self.push_screen(HelpScreen(*self._help_for(self.screen)))

    def _help_for(self, screen: Screen) -> tuple[str, list[tuple[str, str, list]]]:
        """(title, groups of (key, name, what it does)) for the screen the operator looks at."""
        everywhere = [("?, F1", "Help", self.ACTIONS_HELP["help"][1]),
                      ("Ctrl+P", "Command palette", "Every action by name, with what it does"),
                      ("Esc", "Close", "Close this help, and any dialog"),
                      ("Tab", "Focus", "Move between the stage list, the tabs, the tables and the buttons"),
                      ("↑ ↓ j k", "Move, scroll", "Move in lists and tables; scroll the focused text (diffs, "
                       "check details, the log, the auth flow)"),
                      ("PgUp PgDn", "Page", "A page up or down"),
                      ("Home End", "Top, bottom", "To the first or last line")]
        if screen is not self.screen_stack[0]:
            rows = []
            for b in screen.BINDINGS:
                if not isinstance(b, Binding) or b.action == "app.help":
                    continue
                what = self.ACTIONS_HELP.get(b.action.removeprefix("app."), ("", ""))[1]
                rows.append((key_name(self, b.key), b.description, what))
            if not any(b.action.endswith("quit") and b.key == "q" for b in screen.BINDINGS if isinstance(b, Binding)):
                rows.append(("Ctrl+Q", "Quit", self.ACTIONS_HELP["quit"][1]))
            title = "this dialog (" + type(screen).__name__.removesuffix("Screen").lower() + ")"
            return title, [("This dialog", rows), ("Everywhere", everywhere)]
        bound = {b.action for b in self.BINDINGS} | {"why_not"}
        rows = []
        for b in self.BINDINGS:
            if b.action == "help" or b.action.startswith("why_not"):
                continue
            name, what = self.ACTIONS_HELP.get(b.action, (b.description, b.description))
            keys = [key_name(self, x.key) for x in self.BINDINGS if x.action == b.action]
            if rows and rows[-1][1] == name:
                continue
            rows.append((", ".join(keys), name, what))
        palette = [("Ctrl+P", name, what) for action, (name, what) in self.ACTIONS_HELP.items()
                   if action not in bound]
        groups = [("The wizard", rows), ("Everywhere", everywhere)]
        if palette:
            groups.insert(1, ("From the command palette only", palette))
        return ("the audit" if self.audit else "the wizard"), groups

    def action_auth_flow(self) -> None:
        if self.session is None:
            return
        st = self.session.states[self.viewing]
        self.push_screen(AuthFlowScreen(st.title, list(st.checks or []), self.shown))

    def action_toggle_log(self) -> None:
        log = self.query_one("#log", RichLog)
        log.display = not log.display

    def action_toggle_cluster(self) -> None:
        panel = self.query_one(ClusterPanel)
        panel.display = not panel.display

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_report(self) -> None:
        if self.session is not None:
            self.push_screen(ReportScreen(self.session, "Audit report" if self.audit else "Report"))

    def action_export(self) -> None:
        if self.session is None:
            return
        self._export()

    @work(thread=True, group="export", exit_on_error=False)
    def _export(self) -> None:
        def run():
            s = self.session
            info = {"server": self.shown(getattr(s.ctx.cluster, "server", "")),
                    "context": s.ctx.plan.context or "current"}
            try:
                info["version"] = s.ctx.cluster.server_version()
            except Exception:  # noqa: BLE001 - the report is still worth writing
                info["version"] = "?"
            stem = f"ghcr2gitea-{'audit' if s.audit else 'report'}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.export_dir.mkdir(parents=True, exist_ok=True)
            paths = []
            for fmt, ext in (("json", "json"), ("markdown", "md")):
                path = self.export_dir / f"{stem}.{ext}"
                path.write_text(s.render_report(fmt, info))
                paths.append(path)
            self.exported += paths
            self.call_from_thread(self.notify, "report written: " + ", ".join(str(p) for p in paths), timeout=8)
        self._guard(run)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for action, (title, help_text) in self.ACTIONS_HELP.items():
            if action == "quit":
                continue
            yield SystemCommand(title, help_text, lambda a=action: self.run_action(a))


# ---------------------------------------------------------------------- entry point for the CLI
def run_app(start) -> int:
    """The wizard on a real cluster, from what ``wizard.boot.wizard_start`` built (the CLI composes them)."""
    app = WizardApp(start.session, api_factory=start.api_factory, subtitle=start.subtitle,
                    problem="" if start.session is not None else NO_PLAN, resume_command=start.resume_command)
    app.run()
    return finish(app)


def finish(app: WizardApp) -> int:
    """After the screen is gone: print the app's closing line (how to resume), return its exit code."""
    import sys
    if app.exit_note:
        print(app.exit_note, file=sys.stderr)
    return app.return_code or 0


def _conflict(st):
    """(Ref, cause) of the stage's first object it may not change (a planned conflict, or the error it stopped
    with), or None."""
    from wizard.ownership import Ref
    checks = [ch.payload for ch in st.changes or [] if ch.action == "conflict"] + [st.error]
    for c in checks:
        obj = (getattr(c, "evidence", None) or {}).get("object") if isinstance(getattr(c, "evidence", None),
                                                                              dict) else None
        if obj:
            return Ref(obj["kind"], obj["namespace"], obj["name"]), c.cause
    return None
