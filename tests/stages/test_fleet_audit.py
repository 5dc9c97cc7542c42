"""The fleet audit: several clusters audited at once into one report (issue 18 §3).

Three contexts in one kubeconfig — a migrated sandbox, a fresh one, and a cluster that cannot be reached —
give one report that says each correctly, the exit code of the worst (2), and not one mutating request.
"""

from __future__ import annotations

import json
import shutil

import yaml
from helpers import mutating_requests, run_cli

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


def test_a_fleet_of_three_is_reported_cluster_by_cluster(make_sandbox, tmp_path):
    migrated = make_sandbox("migrated", servers=1, agents=1, gitea_token=CANARY)
    fresh = make_sandbox("fresh", servers=1, agents=1, gitea_token=CANARY)
    res = run_cli(migrated, "apply", "--plan", str(migrated.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    kubeconfig = tmp_path / "fleet.kubeconfig"
    merged_kubeconfig(kubeconfig, {"migrated": migrated, "fresh": fresh})
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
    # --all-contexts reads the same three from the kubeconfig; text is a line per cluster
    text = run_cli(None, "audit", "--plan-dir", str(plans), "--all-contexts", "--api-patience", "2",
                   "--format", "text", token=CANARY, env=env)
    assert text.returncode == 2
    lines = text.stdout.splitlines()
    assert lines[0] == "fleet audit of 3 clusters"
    assert [ln.split()[0] for ln in lines[1:]] == ["fresh", "gone", "migrated"]
    assert "could not check" in next(ln for ln in lines if ln.startswith("gone"))
    assert next(ln for ln in lines if ln.startswith("migrated")).split()[1] == "ok"
    for stream in (out.stdout, out.stderr, text.stdout, text.stderr):
        assert CANARY not in stream
    after = {n: len(mutating_requests(sb)) for n, sb in (("migrated", migrated), ("fresh", fresh))}
    assert after == before, "the fleet audit changed something"


def test_a_fleet_audit_needs_a_plan(tmp_path):
    res = run_cli(None, "audit", "--all-contexts", env={"KUBECONFIG": str(tmp_path / "none")})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
