"""The rolling restart under the real ``ghcr2gitea apply --yes``, against a sandbox in its own process.

The sandbox records every k3s restart (start, end) per node; after the apply this reads
``/_sandbox/state`` and reports:

- span: first restart start → last restart end;
- floor: the sum of each node's own restart duration — the minimum any one-at-a-time rollout
  can take, so span/floor is the tool's proof-and-handoff overhead (target ≤ 1.15);
- the guide: ``sleep 35`` after each node, so its wall time is at least 35 s × nodes;
- with ``--max-unavailable 5``: the ideal for batches of 5 — the servers one at a time, then
  per batch (agents in the tool's order, by name) the longest restart in it.
"""

from __future__ import annotations

import re

from ._common import Row, SandboxProc, median, table, verdict

NAME = "rolling_restart"
GUIDE_SLEEP = 35.0
TARGET_SPAN_FLOOR = 1.15
SCENARIOS = [  # label, sandbox args, apply args, max_unavailable, judge span/floor
    ("default 3+2, one at a time", ["--restart-seconds", "2:4"], [], 1, True),
    # a real cluster's timeline: pods 0.5–1.5 s to start (each restart's nsenter pod and each proof's probe
    # pod), /readyz 1 s behind the API port, servers 20–30 s to READY with their kubelet up long before
    ("3+2 --realistic, one at a time", ["--restart-seconds", "2:4", "--realistic"], [], 1, True),
    # the same on a real kube-apiserver (its controller-manager rolls the workloads; scripts/build-real)
    ("3+2 on a real kube-apiserver, one at a time", ["--api", "real", "--restart-seconds", "2:4"], [], 1, True),
    ("1+50, --max-unavailable 5", ["--servers", "1", "--agents", "50", "--restart-seconds", "1:2"],
     ["--max-unavailable", "5"], 5, False),
]


def restarts_of(state: dict) -> list[dict]:
    out = []
    for name, node in state["nodes"].items():
        for r in node["restarts"]:
            out.append({"node": name, "role": node["role"], "start": r["start"], "end": r["end"]})
    return out


def analyse(state: dict, batch: int) -> dict:
    recs = restarts_of(state)
    per_node = {}
    for r in recs:
        per_node.setdefault(r["node"], []).append(r)
    unfinished = [r["node"] for r in recs if r["end"] is None]
    if unfinished:
        raise RuntimeError(f"restarts never ended on: {', '.join(unfinished)}")
    twice = sorted(n for n, rs in per_node.items() if len(rs) > 1)
    untouched = sorted(set(state["nodes"]) - set(per_node))
    dur = {n: sum(r["end"] - r["start"] for r in rs) for n, rs in per_node.items()}
    span = max(r["end"] for r in recs) - min(r["start"] for r in recs)
    floor = sum(dur.values())
    # the tool's order: servers first (by name), then agents (by name) in groups of `batch`
    role = {n: state["nodes"][n]["role"] for n in per_node}
    servers = sorted(n for n in per_node if role[n] == "server")
    agents = sorted(n for n in per_node if role[n] != "server")
    groups = [[s] for s in servers] + [agents[i:i + batch] for i in range(0, len(agents), batch)]
    ideal = sum(max(dur[n] for n in g) for g in groups)
    # hand-off gaps: from the end of one step (node or batch) to the start of the next
    gaps = []
    for a, b in zip(groups, groups[1:], strict=False):
        end_a = max(r["end"] for n in a for r in per_node[n])
        start_b = min(r["start"] for n in b for r in per_node[n])
        gaps.append(start_b - end_a)
    return {"nodes": len(state["nodes"]), "restarted": len(per_node), "twice": twice, "untouched": untouched,
            "span": span, "floor": floor, "ideal": ideal, "steps": len(groups), "gaps": gaps,
            "durations": sorted(dur.values())}


def run() -> list[Row]:
    print(f"== {NAME}: the real `ghcr2gitea apply --yes` against a sandbox process; restarts read from "
          "/_sandbox/state")
    rows: list[Row] = []
    for label, sb_args, apply_args, batch, judged in SCENARIOS:
        with SandboxProc(*sb_args) as sb:
            res = sb.run("apply", "--yes", *apply_args, timeout=600)
            state = sb.state()
        if res.rc != 0:
            raise RuntimeError(f"{label}: apply exited {res.rc}:\n{res.tail()}")
        a = analyse(state, batch)
        m = re.search(r"\[\d+/\d+\] Rolling restart: ok .* in ([\d.]+)s", res.stdout)
        stage = float(m.group(1)) if m else float("nan")
        guide = GUIDE_SLEEP * a["nodes"]
        ratio = a["span"] / a["floor"]
        gaps = a["gaps"] or [0.0]
        print(f"  -- {label}: sandbox {' '.join(sb_args)}; apply --yes {' '.join(apply_args)}".rstrip())
        lines = [
            ["nodes restarted", f"{a['restarted']} of {a['nodes']}"
             + (f" (twice: {', '.join(a['twice'])})" if a["twice"] else "")
             + (f" (untouched: {', '.join(a['untouched'])})" if a["untouched"] else ""), ""],
            ["restart durations (sim)", f"{a['durations'][0]:.2f}–{a['durations'][-1]:.2f} s", ""],
            ["apply wall time (whole run)", f"{res.wall:.1f} s", ""],
            ["Rolling restart stage as reported", f"{stage:.1f} s", ""],
            ["span (first start → last end)", f"{a['span']:.2f} s", ""],
            ["floor (Σ own durations, one at a time)", f"{a['floor']:.2f} s", ""],
        ]
        if batch > 1:
            lines.append([f"ideal, batches of {batch} (servers alone)", f"{a['ideal']:.2f} s  ({a['steps']} steps)",
                          ""])
            lines.append(["span / ideal", f"{a['span'] / a['ideal']:.2f}", ""])
        lines += [
            ["span / floor", f"{ratio:.2f}",
             f"≤ {TARGET_SPAN_FLOOR} → {verdict(ratio <= TARGET_SPAN_FLOOR)}" if judged else "(no target)"],
            ["hand-off gap per step (median / max)", f"{median(gaps) * 1000:.0f} / {max(gaps) * 1000:.0f} ms", ""],
            [f"guide (sleep {GUIDE_SLEEP:.0f} s × {a['nodes']} nodes), at least", f"{guide:.0f} s", ""],
            ["span / guide", f"{a['span'] / guide:.3f}  ({guide / a['span']:.1f}× faster)", ""],
        ]
        print(table(["figure", "value", "target"], lines, indent="     "))
        rows.append(Row(NAME, f"{label}: span", f"{a['span']:.2f} s"))
        rows.append(Row(NAME, f"{label}: span / floor", f"{ratio:.2f}",
                        f"≤ {TARGET_SPAN_FLOOR}" if judged else "", verdict(ratio <= TARGET_SPAN_FLOOR) if judged else ""))
        if batch > 1:
            rows.append(Row(NAME, f"{label}: span / ideal for batches of {batch}",
                            f"{a['span'] / a['ideal']:.2f} (ideal {a['ideal']:.2f} s)"))
        rows.append(Row(NAME, f"{label}: span vs guide's ≥ {guide:.0f} s", f"{guide / a['span']:.1f}× faster"))
        if a["twice"] or a["untouched"]:
            rows.append(Row(NAME, f"{label}: every node restarted exactly once", "no", "yes", "MISS"))
    return rows


if __name__ == "__main__":
    from .__main__ import main
    raise SystemExit(main([NAME]))
