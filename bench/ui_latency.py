"""The wizard's screen: time to first screen, and the live panel under a burst of 1000 node events.

1. Time to first screen, in a real terminal (tmux, 120x36), from starting the process until the
   screen shows the stage list and the nodes (``Preflight`` and ``dellmini1``) — what the
   acceptance check waits for — then until Preflight is verified (``cluster reachable``), and
   for the 1000-node sandbox until the panel lists all 1003 nodes. ``ghcr2gitea demo`` (3+2)
   and ``ghcr2gitea demo --agents 1000``, 3 runs each. Baseline: a bare Textual app showing
   one line in the same terminal (a fresh interpreter importing Textual and drawing).
2. The live panel under a burst: a fresh interpreter runs the wizard headless (120x36) with
   1003 nodes in the panel, then a thread delivers 1000 node events one by one as a watch does.
   Figures: event → on screen latency (p50/p95/max), redraws (frames) and their cost, the
   longest stall of the UI loop (a 5 ms timer's worst lateness), and when the last event shows.
   Baseline, in the same process: the naive way — one UI callback per event, no coalescing.

Targets: demo first screen < 10 s (the acceptance check), 1000 nodes < 10 s; burst: p95
latency < 250 ms, UI loop never stalled > 100 ms, 1000 events in far fewer than 1000 redraws.
Without tmux, part 1 is skipped (printed as such).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from ._common import REPO, Row, cli, last_json, median, run_python, table, verdict

NAME = "ui_latency"
RUNS = 3
SIZE = (120, 36)
FIRST_SCREEN_TARGET = 10.0
P95_TARGET_MS = 250.0
STALL_TARGET_MS = 100.0

BASELINE_APP = r"""
from textual.app import App
from textual.widgets import Static
class Bare(App):
    def compose(self):
        yield Static("baseline-ready")
Bare().run()
"""


class Tmux:
    """One tmux session of ours, named so it is stopped by that name (never another session)."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]):
        self.name = f"ghcr2gitea-bench-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        w, h = str(SIZE[0]), str(SIZE[1])
        # pin the size before the command starts (window-size "latest" lets other clients resize it)
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", w, "-y", h, "sleep 60"], check=True)
        subprocess.run(["tmux", "set-option", "-t", self.name, "window-size", "manual"], check=True)
        subprocess.run(["tmux", "resize-window", "-t", self.name, "-x", w, "-y", h], check=True)
        subprocess.run(["tmux", "respawn-pane", "-k", "-t", self.name,
                        f"cd {cwd} && env -u COLUMNS -u LINES {exports} {command}; echo '[exited]'; sleep 60"], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True,
                              text=True).stdout

    def press(self, key: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, key], capture_output=True)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def _timeline(command: list[str], marks: dict[str, tuple[str, ...]], timeout: float = 60.0) -> dict[str, float]:
    """Seconds from start until each mark's texts are all on screen; quits with q and waits for the exit."""
    tmp = Path(tempfile.mkdtemp(prefix="ghcr2gitea-bench-"))
    env = {"XDG_STATE_HOME": str(tmp / "state"), "HOME": str(tmp), "TERM": "xterm-256color"}
    t0 = time.perf_counter()
    term = Tmux(" ".join(command), tmp, env)
    seen: dict[str, float] = {}
    try:
        deadline = t0 + timeout
        while len(seen) < len(marks) and time.perf_counter() < deadline:
            scr = term.screen()
            now = time.perf_counter() - t0
            for label, texts in marks.items():
                if label not in seen and all(t in scr for t in texts):
                    seen[label] = now
            time.sleep(0.02)
        missing = [m for m in marks if m not in seen]
        if missing:
            raise RuntimeError(f"after {timeout:.0f} s the screen lacks {missing}:\n{term.screen()}")
        term.press("q")
        end = time.perf_counter() + 30
        while "[exited]" not in term.screen() and time.perf_counter() < end:
            time.sleep(0.1)
        return seen
    finally:
        term.close()
        shutil.rmtree(tmp, ignore_errors=True)


CHILD = r"""
import asyncio, json, statistics, threading, time
from textual.widgets import DataTable
from screens.app import WizardApp
from screens.widgets.cluster_panel import ClusterPanel
from wizard.kube import NodeInfo

N = 1003
BURST = 1000

def nodes(ready):
    out = [NodeInfo(f"server{i + 1}" if i else "dellmini1", "server", ready, "v1.33.5+k3s1", f"10.0.0.{i}") for i in range(3)]
    out += [NodeInfo(f"agent{i + 1:04d}", "agent", ready, "v1.33.5+k3s1", f"10.1.{i // 250}.{i % 250}")
            for i in range(N - 3)]
    return out

async def burst(coalesced):
    app = WizardApp(None)
    async with app.run_test(size=(120, 36)) as pilot:
        panel = app.query_one(ClusterPanel)
        table = panel.query_one("#nodes", DataTable)
        t0 = time.perf_counter()
        panel.nodes_changed(nodes("True"), [])
        while table.row_count < N:
            await pilot.pause(0.01)
        preload = time.perf_counter() - t0
        await pilot.pause(0.3)
        put, shown, frames = {}, {}, []
        flush = panel.coalescer.flush
        def timed(latest, items):
            a = time.perf_counter()
            flush(latest, items)
            b = time.perf_counter()
            frames.append(b - a)
            for key in latest:
                shown[key[1]] = b
        panel.coalescer.flush = timed
        lateness, ticking = [], True
        async def ticker():  # how late a 5 ms sleep wakes up = how long the UI loop was blocked
            while ticking:
                a = time.perf_counter()
                await asyncio.sleep(0.005)
                lateness.append(time.perf_counter() - a - 0.005)
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        changed = nodes("False")[3:3 + BURST]
        loop = asyncio.get_running_loop()
        def naive_apply(n):
            a = time.perf_counter()
            panel._flush({("node", n.name): n}, [])
            b = time.perf_counter()
            frames.append(b - a)
            shown[n.name] = b
        def feed():
            for n in changed:
                put[n.name] = time.perf_counter()
                if coalesced:
                    panel.nodes_changed([n], [])
                else:
                    loop.call_soon_threadsafe(naive_apply, n)
        t_start = time.perf_counter()
        th = threading.Thread(target=feed)
        th.start()
        th.join()
        t_fed = time.perf_counter()
        while len(shown) < BURST:
            await pilot.pause(0.005)
        t_done = max(shown.values())
        await pilot.pause(0.05)
        ticking = False
        await tick
        lat = sorted((shown[k] - put[k]) * 1000 for k in put)
        cell = str(table.get_cell(changed[-1].name, "ready"))
        return {"preload_s": preload, "feed_s": t_fed - t_start, "last_shown_after_last_event_ms": (t_done - t_fed) * 1000,
                "burst_total_ms": (t_done - t_start) * 1000, "p50_ms": statistics.median(lat),
                "p95_ms": lat[int(len(lat) * 0.95) - 1], "max_ms": lat[-1], "frames": len(frames),
                "frame_p50_ms": statistics.median(frames) * 1000, "frame_max_ms": max(frames) * 1000,
                "stall_max_ms": max(lateness) * 1000 if lateness else 0.0, "last_cell": cell}

async def main():
    out = {"naive": await burst(False), "coalesced": await burst(True)}
    print(json.dumps(out))

asyncio.run(main())
"""


def first_screen_rows() -> list[Row]:
    if shutil.which("tmux") is None:
        print("  part 1 skipped: tmux is not installed")
        return [Row(NAME, "time to first screen", "skipped (no tmux)")]
    import sys
    rows, lines = [], []
    tmp = Path(tempfile.mkdtemp(prefix="ghcr2gitea-bench-"))
    try:
        (tmp / "bare.py").write_text(BASELINE_APP)
        base = median([_timeline([sys.executable, str(tmp / "bare.py")], {"ready": ("baseline-ready",)})["ready"]
                       for _ in range(RUNS)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines.append(["baseline: bare Textual app", "ready", f"{base:.2f} s", ""])
    scenarios = [("demo 3+2", ["demo"], {"first screen": ("Preflight", "dellmini1"),
                                          "Preflight verified": ("cluster reachable", "lenovomini")}),
                 ("demo 3+1000", ["demo", "--agents", "1000"],
                  {"first screen": ("Preflight", "dellmini1"), "all 1003 nodes listed": ("1003 nodes",),
                   "Preflight verified": ("cluster reachable",)})]
    for label, args, marks in scenarios:
        runs = [_timeline([*cli(), *args], marks, timeout=120) for _ in range(RUNS)]
        for mark in marks:
            value = median([r[mark] for r in runs])
            judged = mark == "first screen"
            lines.append([label, mark, f"{value:.2f} s", f"{value / base:.1f}× baseline"])
            rows.append(Row(NAME, f"{label}: {mark} (median of {RUNS})", f"{value:.2f} s ({value / base:.1f}× bare)",
                            f"< {FIRST_SCREEN_TARGET:.0f} s" if judged else "",
                            verdict(value < FIRST_SCREEN_TARGET) if judged else ""))
    print(table(["run", "mark", "median", "vs baseline"], lines))
    return rows


def burst_rows() -> list[Row]:
    res = run_python(CHILD, timeout=300)
    if res.rc != 0:
        raise RuntimeError(f"burst child failed (exit {res.rc}):\n{res.tail(30)}")
    data = last_json(res.stdout)
    naive, co = data["naive"], data["coalesced"]
    lines = []
    for key, label in (("preload_s", "1003 nodes into the panel (s)"), ("feed_s", "burst delivered by the thread (s)"),
                       ("p50_ms", "event → screen p50 (ms)"), ("p95_ms", "event → screen p95 (ms)"),
                       ("max_ms", "event → screen max (ms)"), ("last_shown_after_last_event_ms",
                                                              "last event on screen after the burst (ms)"),
                       ("frames", "redraws (panel flushes)"), ("frame_p50_ms", "redraw cost p50 (ms)"),
                       ("frame_max_ms", "redraw cost max (ms)"), ("stall_max_ms", "UI loop longest stall (ms)")):
        digits = 0 if key == "frames" else 3 if key.endswith("_s") else 1
        lines.append([label, f"{naive[key]:.{digits}f}", f"{co[key]:.{digits}f}"])
    print(table(["burst of 1000 node events, 1003-node panel", "naive (1 callback/event)", "coalesced"], lines))
    ok_p95 = co["p95_ms"] < P95_TARGET_MS
    ok_stall = co["stall_max_ms"] < STALL_TARGET_MS
    ok_frames = co["frames"] < 100
    return [
        Row(NAME, "burst: event → screen p95", f"{co['p95_ms']:.0f} ms (naive {naive['p95_ms']:.0f} ms)",
            f"< {P95_TARGET_MS:.0f} ms", verdict(ok_p95)),
        Row(NAME, "burst: longest UI stall", f"{co['stall_max_ms']:.0f} ms (naive {naive['stall_max_ms']:.0f} ms)",
            f"< {STALL_TARGET_MS:.0f} ms", verdict(ok_stall)),
        Row(NAME, "burst: redraws for 1000 events", f"{co['frames']} (naive {naive['frames']})", "< 100",
            verdict(ok_frames)),
        Row(NAME, "burst: last event on screen after the burst",
            f"{co['last_shown_after_last_event_ms']:.0f} ms (naive {naive['last_shown_after_last_event_ms']:.0f} ms)"),
    ]


def run() -> list[Row]:
    print(f"== {NAME}: the wizard's first screen in tmux {SIZE[0]}x{SIZE[1]} ({RUNS} runs), and the live panel "
          "under a burst of 1000 node events")
    assert REPO.exists()
    return first_screen_rows() + burst_rows()


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.ui_latency``: run this benchmark alone and print its rows."""
    rows = run()
    print(table(["benchmark", "figure", "value", "target", "verdict"],
                [[r.bench, r.figure, r.value, r.target, r.verdict] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
