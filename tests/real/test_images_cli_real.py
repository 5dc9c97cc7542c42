"""``ghcr2gitea images --plan F`` as a user runs it, against the real registry pair.

The plan names GHCR as the source (``ghcr.io/acme/…``); ``--source-url`` points it at the source
stack, and the plan's ``network.resolve`` maps every ``.test`` name, so nothing is looked up in DNS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from real.ocibuild import Layout, MiB
from real.stack import REPO, WRITER, push_layout, raw_manifest

GHCR2GITEA = str(Path(sys.executable).parent / "ghcr2gitea")


def plan_file(pair, tmp: Path, *, org: str = "acme") -> Path:
    t = pair.target
    plan = {"gitea": {"root_url": t.root_url, "org": org, "username": WRITER},
            "registry": {"host": t.registry, "ca_file": str(t.ca_bundle)},
            "images": [{"source": f"ghcr.io/{org}/app", "target": f"{t.registry}/{org}/app"}],
            "network": {"resolve": pair.resolve()}}
    path = tmp / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def images(pair, plan: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GITEA_TOKEN", "GHCR_TOKEN")}
    env["GITEA_TOKEN"] = token or pair.target.tokens[WRITER]
    env["GHCR_TOKEN"] = pair.source.tokens[WRITER]
    env["GHCR_USER"] = WRITER
    return subprocess.run([GHCR2GITEA, "images", "--plan", str(plan), "--source-url",
                           f"https://{pair.source.registry}", "--source-ca-file", str(pair.source.ca_bundle), *args],
                          capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)


def test_images_command_copies_then_reruns_as_a_no_op_and_reports_json(registry_pair, tmp_path):
    pair = registry_pair
    lay = Layout(tmp_path / "layout")
    info = {t: lay.image(t, own_size=1 * MiB) for t in ("v1", "v2", "latest")}
    for t in info:
        push_layout(pair.source, lay.dir, t)
    plan = plan_file(pair, tmp_path)

    dry = images(pair, plan, "--dry-run", "--tags", "v[0-9]", "--format", "json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] and {t["status"] for t in report["images"][0]["tags"]} == {"would-copy"}
    assert raw_manifest(pair.target, REPO, "v1") is None

    done = images(pair, plan, "--all-tags", "--format", "json")
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    digests = report["digests"]
    for t, facts in info.items():
        entry = digests[f"{pair.source.registry}/{REPO}:{t}"]
        assert entry["source_digest"] == entry["target_digest"] == facts["digest"]
        got = raw_manifest(pair.target, REPO, t)
        assert got is not None
    assert "blobs" in done.stderr  # progress on stderr
    for secret in (pair.source.tokens[WRITER], pair.target.tokens[WRITER]):
        assert secret not in done.stdout + done.stderr

    again = images(pair, plan, "--all-tags")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("present") == 3 and "0 blob(s) uploaded" in again.stdout


def test_images_command_errors_are_one_line_with_the_fix(registry_pair, tmp_path):
    pair = registry_pair
    lay = Layout(tmp_path / "layout")
    lay.small("latest")
    push_layout(pair.source, lay.dir, "latest")
    plan = plan_file(pair, tmp_path)
    bad = images(pair, plan, "--tags", "v[")
    assert bad.returncode == 2 and "--tags 'v['" in bad.stderr and "Traceback" not in bad.stderr
    wrong = images(pair, plan, "--token", token="not-the-token")
    assert wrong.returncode == 2  # argparse: no such option
    refused = images(pair, plan, token="not-the-token-at-all")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "refused" in refused.stdout and "not-the-token-at-all" not in refused.stdout + refused.stderr
    nobody = plan_file(pair, tmp_path, org="nobody")
    missing = images(pair, nobody)
    assert missing.returncode == 1 and "the owner 'nobody' does not exist" in missing.stdout
