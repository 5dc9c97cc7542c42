"""Sandbox start-up: time from ``Sandbox(...).start()`` to ready, and the memory it takes.

Every run is a fresh interpreter (``python -c``), so sizes and runs do not pollute each other
and each figure is the cold start a user sees. In that process, after the imports:

1. baseline: start an empty aiohttp server on loopback on its own thread and loop (the shape of
   ``Sandbox.start``), wait for it, stop it;
2. read VmRSS, time ``Sandbox(dir, Options(servers, agents)).start()``, read VmRSS and VmHWM;
3. let it idle a moment (heartbeats, first pods) and read VmRSS/VmHWM again; stop it.

Targets (issue): default 3+2 ready < 1 s; 3+1000 ready < 10 s and peak RSS < 300 MB (the whole
process's VmHWM, imports included — the strictest reading).
"""

from __future__ import annotations

import shutil
import tempfile

from ._common import Row, last_json, median, run_python, table, verdict

NAME = "sandbox_startup"
IDLE_SECONDS = 2.0
SIZES = [  # label, servers, agents, runs, start target (s), peak RSS target (MB) or None
    ("default 3+2", 3, 2, 5, 1.0, None),
    ("3+1000", 3, 1000, 3, 10.0, 300.0),
]

CHILD = r"""
import asyncio, json, sys, threading, time
from aiohttp import web

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024  # kB -> MB
    return out

def empty_aiohttp():
    ready, box = threading.Event(), {}
    def thread():
        loop = box["loop"] = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        async def start():
            runner = box["runner"] = web.AppRunner(web.Application(), handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(box["runner"].cleanup())
        loop.close()
    t0 = time.perf_counter()
    th = threading.Thread(target=thread, daemon=True)
    th.start()
    if not ready.wait(30):
        raise SystemExit("empty aiohttp server did not start")
    took = time.perf_counter() - t0
    box["loop"].call_soon_threadsafe(box["loop"].stop)
    th.join(10)
    return took

directory, servers, agents, idle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
baseline = empty_aiohttp()
from sandbox.cluster import Options
from sandbox.server import Sandbox
before = status()
t0 = time.perf_counter()
sb = Sandbox(directory, Options(servers=servers, agents=agents)).start()
start = time.perf_counter() - t0
at_ready = status()
nodes = len(sb.cluster.nodes)
try:
    time.sleep(idle)
    idle_st = status()
finally:
    sb.stop()
print(json.dumps({"baseline": baseline, "start": start, "nodes": nodes, "rss_before": before["VmRSS"],
                  "rss_ready": at_ready["VmRSS"], "hwm_ready": at_ready["VmHWM"], "rss_idle": idle_st["VmRSS"],
                  "hwm_idle": idle_st["VmHWM"], "stopped": not sb.thread.is_alive()}))
"""


def one_run(servers: int, agents: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="ghcr2gitea-bench-start-")
    try:
        res = run_python(CHILD, tmp, str(servers), str(agents), str(IDLE_SECONDS), timeout=180)
        if res.rc != 0:
            raise RuntimeError(f"start-up child exited {res.rc}:\n{res.tail(30)}")
        return last_json(res.stdout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run() -> list[Row]:
    print(f"== {NAME}: Sandbox(...).start() to ready, each run in a fresh interpreter")
    rows: list[Row] = []
    lines = []
    baselines: list[float] = []
    results = {}
    for label, servers, agents, n, _t, _m in SIZES:
        runs = [one_run(servers, agents) for _ in range(n)]
        results[label] = runs
        baselines += [r["baseline"] for r in runs]
        if not all(r["stopped"] for r in runs):
            print(f"  warning: a {label} sandbox thread was still alive after stop()")
    base = median(baselines)
    print(f"  baseline: empty aiohttp server start on its own thread, same process: median {base * 1000:.1f} ms "
          f"over {len(baselines)} runs")
    for label, _s, _a, n, t_target, m_target in SIZES:
        runs = results[label]
        starts = [r["start"] for r in runs]
        st = median(starts)
        peak = max(r["hwm_idle"] for r in runs)
        growth = median([r["rss_ready"] - r["rss_before"] for r in runs])
        idle_growth = median([r["rss_idle"] - r["rss_before"] for r in runs])
        ok_t = st < t_target
        lines.append([label, str(runs[0]["nodes"]), str(n), f"{st:.3f} s", f"{min(starts):.3f}–{max(starts):.3f}",
                      f"{st / base:.0f}×", f"{median([r['rss_ready'] for r in runs]):.0f} MB", f"+{growth:.0f} MB",
                      f"+{idle_growth:.0f} MB", f"{peak:.0f} MB",
                      f"< {t_target:g} s" + (f", peak < {m_target:g} MB" if m_target else ""),
                      verdict(ok_t and (m_target is None or peak < m_target))])
        rows.append(Row(NAME, f"{label} start (median of {n})", f"{st:.3f} s", f"< {t_target:g} s", verdict(ok_t)))
        rows.append(Row(NAME, f"{label} start / empty aiohttp", f"{st / base:.0f}×"))
        rows.append(Row(NAME, f"{label} RSS growth at ready / after {IDLE_SECONDS:g} s idle",
                        f"+{growth:.0f} MB / +{idle_growth:.0f} MB"))
        rows.append(Row(NAME, f"{label} peak RSS (VmHWM, whole process)", f"{peak:.0f} MB",
                        f"< {m_target:g} MB" if m_target else "", verdict(peak < m_target) if m_target else ""))
    print(table(["size", "nodes", "runs", "start (median)", "min–max", "vs baseline", "RSS at ready",
                 "growth at ready", f"growth +{IDLE_SECONDS:g}s idle", "peak RSS", "target", "verdict"], lines))
    print("  (growth = VmRSS after minus before Sandbox.start(), imports excluded; peak = VmHWM of the whole "
          "process, imports included, worst run)")
    return rows


if __name__ == "__main__":
    from .__main__ import main
    raise SystemExit(main([NAME]))
