"""The fleet audit: several clusters audited at once into one report (issue 18 §3).

Three contexts in one kubeconfig — a migrated sandbox, a fresh one, and a cluster that cannot be reached —
give one report that says each correctly, the exit code of the worst (2), and not one mutating request.
"""

from __future__ import annotations

import json
import shutil

import yaml
from helpers import mutating_requests, run_cli

from wizard.stages import STAGES

CANARY = "fleet-canary-0f3c9e1d2b7a4e6f8a9b0c1d2e3f4a5b6c7d8e9f"  # the same Gitea token in both sandboxes


def merged_kubeconfig(path, named: dict) -> None:
    """One kubeconfig with a context per sandbox (renamed) and one whose server nothing listens on."""
    cfg = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": [],
           "current-context": next(iter(named))}
    for name, sb in named.items():
        one = yaml.safe_load(sb.kubeconfig.read_text())
        cfg["clusters"].append({"name": name, "cluster": one["clusters"][0]["cluster"]})
        cfg["users"].append({"name": name, "user": one["users"][0]["user"]})
        cfg["contexts"].append({"name": name, "context": {"cluster": name, "user": name}})
    cfg["clusters"].append({"name": "gone", "cluster": {"server": "https://127.0.0.1:9",
                                                        "insecure-skip-tls-verify": True}})
    cfg["users"].append({"name": "gone", "user": {"token": "nothing-listens-here"}})
    cfg["contexts"].append({"name": "gone", "context": {"cluster": "gone", "user": "gone"}})
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)


def text_table(stdout: str) -> dict[str, dict[str, str]]:
    """The text report's table, ``{cluster: {"exit": code, <stage key>: status, …}}``; its header must name
    every stage by key; an unchecked cluster's row is ``{"exit": code, <why>: ""}``."""
    lines = stdout.splitlines()
    assert lines[0].startswith("fleet audit of "), stdout
    header = lines[1].split()
    assert header == ["cluster", "exit", *(s.key for s in STAGES)], header
    rows = {}
    for ln in lines[2:]:
        if not ln:
            break
        cells = ln.split()
        rows[cells[0]] = dict(zip(header[1:], cells[1:], strict=False)) if len(cells) == len(header) else {
            "exit": cells[1], " ".join(cells[2:]): ""}
    assert len(lines[2:]) > len(rows), "nothing follows the table"
    return rows


def migrated_and_fresh(make_sandbox, tmp_path):
    """Two 1+1 sandboxes, the first migrated, and a kubeconfig with a context for each."""
    migrated = make_sandbox("migrated", servers=1, agents=1, gitea_token=CANARY)
    fresh = make_sandbox("fresh", servers=1, agents=1, gitea_token=CANARY)
    res = run_cli(migrated, "apply", "--plan", str(migrated.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    kubeconfig = tmp_path / "fleet.kubeconfig"
    merged_kubeconfig(kubeconfig, {"migrated": migrated, "fresh": fresh})
    return migrated, fresh, kubeconfig


def test_a_fleet_of_three_is_reported_cluster_by_cluster(make_sandbox, tmp_path):
    migrated, fresh, kubeconfig = migrated_and_fresh(make_sandbox, tmp_path)
    plans = tmp_path / "plans"
    plans.mkdir()
    for name, sb in (("migrated", migrated), ("fresh", fresh), ("gone", fresh)):
        shutil.copy(sb.plan, plans / f"{name}.yaml")
    before = {n: len(mutating_requests(sb)) for n, sb in (("migrated", migrated), ("fresh", fresh))}
    env = {"KUBECONFIG": str(kubeconfig)}
    args = ("audit", "--plan-dir", str(plans), "--context", "migrated", "--context", "fresh", "--context", "gone",
            "--api-patience", "2")
    out = run_cli(None, *args, "--format", "json", token=CANARY, env=env)
    assert out.returncode == 2, out.stdout + out.stderr  # the worst of 0, 1 and 2
    report = json.loads(out.stdout)["clusters"]
    assert list(report) == ["migrated", "fresh", "gone"]
    assert all(s["status"] != "fail" for s in report["migrated"]["stages"]), report["migrated"]
    assert any(s["status"] == "fail" for s in report["fresh"]["stages"])
    assert report["gone"]["stages"] == [] and "127.0.0.1:9" in report["gone"]["error"]
    assert report["migrated"]["cluster"]["context"] == "migrated"
    # --all-contexts reads the same three from the kubeconfig; text is a table of clusters × stages
    text = run_cli(None, "audit", "--plan-dir", str(plans), "--all-contexts", "--api-patience", "2",
                   "--format", "text", token=CANARY, env=env)
    assert text.returncode == 2, text.stdout + text.stderr
    table = text_table(text.stdout)
    assert list(table) == ["fresh", "gone", "migrated"]  # the kubeconfig's contexts, sorted
    for name in ("fresh", "migrated"):  # each cell is that stage's status in the JSON report
        assert table[name] == {"exit": "0" if name == "migrated" else "1",
                               **{s["key"]: s["status"] for s in report[name]["stages"]}}, table[name]
    assert table["gone"] == {"exit": "2", "unreachable": ""}
    gone_error = [ln for ln in text.stdout.splitlines() if ln.startswith("gone: ")]
    assert len(gone_error) == 1 and "127.0.0.1:9" in gone_error[0]  # its one-line error, below the table
    assert "exit 2: the worst of the clusters" in text.stdout
    assert max(len(ln) for ln in text.stdout.splitlines() if not ln.startswith("gone: ")) <= 120
    for stream in (out.stdout, out.stderr, text.stdout, text.stderr):
        assert CANARY not in stream
    after = {n: len(mutating_requests(sb)) for n, sb in (("migrated", migrated), ("fresh", fresh))}
    assert after == before, "the fleet audit changed something"


def test_one_plan_for_several_contexts_audits_each_cluster_with_it(make_sandbox, tmp_path):
    """``--plan F`` with several ``--context``: the one plan against each context's own cluster (the plan's
    ``cluster.context`` names none of them), in JSON and in the Markdown table."""
    migrated, fresh, kubeconfig = migrated_and_fresh(make_sandbox, tmp_path)
    servers = {n: yaml.safe_load(sb.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
               for n, sb in (("migrated", migrated), ("fresh", fresh))}
    assert len(set(servers.values())) == 2
    before = {n: len(mutating_requests(sb)) for n, sb in (("migrated", migrated), ("fresh", fresh))}
    env = {"KUBECONFIG": str(kubeconfig)}
    plan = ("audit", "--plan", str(migrated.plan), "--api-patience", "2")
    two = run_cli(None, *plan, "--context", "migrated", "--context", "fresh", "--format", "json", token=CANARY, env=env)
    assert two.returncode == 1, two.stdout + two.stderr  # the worst of 0 and 1
    report = json.loads(two.stdout)["clusters"]
    assert list(report) == ["migrated", "fresh"]
    for name in report:  # each context's own API server, not the plan's context
        assert report[name]["cluster"]["context"] == name and report[name]["cluster"]["server"] == servers[name]
    assert all(s["status"] != "fail" for s in report["migrated"]["stages"]), report["migrated"]
    assert any(s["status"] == "fail" for s in report["fresh"]["stages"])  # not migrated to the plan's Gitea
    md = run_cli(None, *plan, "--context", "migrated", "--context", "fresh", "--context", "gone",
                 "--format", "markdown", token=CANARY, env=env)
    assert md.returncode == 2, md.stdout + md.stderr
    lines = md.stdout.splitlines()
    assert lines[0] == "# ghcr2gitea fleet audit"
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith("|")]
    assert rows[0] == ["Cluster", "Result", *(s.title for s in STAGES)] and set(rows[1]) == {"---"}
    by_cluster = {r[0]: r[1:] for r in rows[2:]}
    assert list(by_cluster) == ["migrated", "fresh", "gone"]
    for name, verdict in (("migrated", "ok"), ("fresh", "findings")):
        assert by_cluster[name] == [verdict, *(s["status"] for s in report[name]["stages"])], by_cluster[name]
    assert by_cluster["gone"] == ["could not check", *["—"] * len(STAGES)]
    gone = [ln for ln in lines if ln.startswith("**gone** could not be checked: ")]
    assert len(gone) == 1 and "127.0.0.1:9" in gone[0]
    for stream in (two.stdout, two.stderr, md.stdout, md.stderr):
        assert CANARY not in stream
    after = {n: len(mutating_requests(sb)) for n, sb in (("migrated", migrated), ("fresh", fresh))}
    assert after == before, "the fleet audit changed something"


def test_a_fleet_audit_needs_a_plan(tmp_path):
    res = run_cli(None, "audit", "--all-contexts", env={"KUBECONFIG": str(tmp_path / "none")})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
