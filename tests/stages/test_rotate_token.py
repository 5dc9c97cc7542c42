"""``ghcr2gitea rotate-token`` (issue 18 §2): the new token everywhere the migration put the old one, proven.

On a migrated sandbox, with a second access token made for registry-user in Gitea: afterwards the old token
is in no Secret and no node file (the rotation's own backups, which held it, are gone), every node restarted
once more and proven, pulls verified — and neither token appears in any output, the journal and its mirror,
any other cluster object, Secret or node file, or a pod log. A new token Gitea refuses, or one that may not
push, stops the rotation at Credentials before anything is written.
"""

from __future__ import annotations

import base64
import json
import os

import pytest
from helpers import (
    assert_nowhere,
    left_in_the_world,
    mutating_requests,
    run_cli,
    sandbox_state,
    secrets_and_node_files,
)

from sandbox import cluster as C
from wizard.plan import load
from wizard.registries import PATH as REGISTRIES
from wizard.rotate import REVOKE

CONTAINERD_CONFIG = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"  # k3s writes it from registries.yaml

OLD = "old-canary-7d1e0c5b9a8f4e3d2c1b0a9f8e7d6c5b4a3f2e1d"
NEW = "new-canary-1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"


def test_rotate_token_replaces_the_old_one_everywhere_and_proves_it(make_sandbox, tmp_path):
    sb = make_sandbox(servers=1, agents=1, gitea_token=OLD)
    plan = load(sb.plan)
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    assert OLD in secrets_and_node_files(sb)
    restarts = {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()}
    sb.cluster.gitea.users[C.USERNAME].more_tokens.add(NEW)  # made in Gitea (Settings → Applications)
    new_file = tmp_path / "new-token"
    new_file.write_text(NEW + "\n")
    os.chmod(new_file, 0o600)
    out = run_cli(sb, "rotate-token", "--plan", str(sb.plan), "--new-token-file", str(new_file), "--yes",
                  "--node-timeout", "20")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the old token can now be revoked" in out.stdout
    for stream in (out.stdout, out.stderr, res.stdout, res.stderr):
        assert OLD not in stream and NEW not in stream
    world = secrets_and_node_files(sb)
    assert OLD not in world, "the old token is still in a Secret or a node file"
    assert NEW in world
    after = {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()}
    assert after == {n: k + 1 for n, k in restarts.items()}, (restarts, after)  # each once more, proven
    for name in after:
        assert f"{name}: restarted and proven" in out.stdout
    # canary scan: where neither token may be — the journal file and its ConfigMap mirror, the state directory,
    # every cluster object but the Secrets, every pod log; every Secret but the two that must hold the new token;
    # every node file but registries.yaml and the containerd config k3s renders from it
    produced = {"apply output": res.stdout + res.stderr, "rotate-token output": out.stdout + out.stderr}
    produced.update(left_in_the_world(sb))
    secrets = secret_texts(sb)
    holders = {f"{plan.secrets_namespace}/{plan.push_secret}", f"{plan.secrets_namespace}/{plan.pull_secret}"}
    assert {where for where, text in secrets.items() if NEW in text} == holders, sorted(secrets)
    produced.update({where: text for where, text in secrets.items() if where not in holders})
    for node, files in node_files(sb).items():  # the wizard's registries.yaml, and containerd's config k3s makes of it
        holding = {path for path, body in files.items() if isinstance(body, str) and NEW in body}
        assert holding == {REGISTRIES, CONTAINERD_CONFIG}, (node, holding)
        produced.update({f"{node}:{path}": body for path, body in files.items()
                         if path not in holding and isinstance(body, str)})
    assert_nowhere(produced, OLD, NEW)
    # the old token may now go: the cluster works on the new one alone
    sb.cluster.gitea.users[C.USERNAME].token = NEW
    sb.cluster.gitea.users[C.USERNAME].more_tokens.clear()
    audit = run_cli(sb, "audit", "--plan", str(sb.plan), "--format", "json", token=NEW)
    assert audit.returncode == 0, json.dumps([s for s in json.loads(audit.stdout)["stages"] if s["status"] == "fail"])


def test_rotate_token_refuses_the_token_in_use_and_a_readable_file(make_sandbox, tmp_path):
    sb = make_sandbox(servers=1, agents=1, gitea_token=OLD)
    assert run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20").returncode == 0
    same = tmp_path / "same"
    same.write_text(OLD + "\n")
    os.chmod(same, 0o600)
    out = run_cli(sb, "rotate-token", "--plan", str(sb.plan), "--new-token-file", str(same), "--yes")
    assert out.returncode == 2 and "already in use" in out.stderr and OLD not in out.stderr + out.stdout
    os.chmod(same, 0o644)
    out = run_cli(sb, "rotate-token", "--plan", str(sb.plan), "--new-token-file", str(same), "--yes")
    assert out.returncode == 2 and "--new-token-file" in out.stderr and "chmod 600" in out.stderr


def secret_texts(sb) -> dict[str, str]:
    """Every Secret's decoded data, by ``namespace/name``."""
    from wizard.cluster import Cluster
    api = Cluster.connect(str(sb.kubeconfig))
    try:
        return {f"{s['metadata']['namespace']}/{s['metadata']['name']}": "\n".join(
            base64.b64decode(v).decode(errors="replace") for v in (s.get("data") or {}).values())
            for s in api.list("Secret", None)}
    finally:
        api.close()


def node_files(sb) -> dict:
    return {n: v["files"] for n, v in sandbox_state(sb)["nodes"].items()}


@pytest.mark.parametrize("kind", ["unknown to Gitea", "read-only"])
def test_rotate_token_stops_at_credentials_when_the_new_token_cannot_push(make_sandbox, tmp_path, kind):
    """A new token Gitea does not know, or one scoped read:package (it logs in and pulls, never pushes): the
    rotation stops at Credentials, before its first write — no Secret, no node file, no restart, no revoke line."""
    sb = make_sandbox(servers=1, agents=1, gitea_token=OLD)
    assert run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20").returncode == 0
    if kind == "read-only":
        sb.cluster.gitea.users[C.USERNAME].read_tokens.add(NEW)  # made in Gitea with read:package only
    world, files = secrets_and_node_files(sb), node_files(sb)
    restarts = {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()}
    writes = len(mutating_requests(sb))
    new_file = tmp_path / "new-token"
    new_file.write_text(NEW + "\n")
    os.chmod(new_file, 0o600)
    out = run_cli(sb, "rotate-token", "--plan", str(sb.plan), "--new-token-file", str(new_file), "--yes",
                  "--node-timeout", "20")
    both = out.stdout + out.stderr
    assert out.returncode != 0, both
    failed = "token accepted by Gitea" if kind == "unknown to Gitea" else "token may push"
    assert f"[1/5] Credentials: FAILED — {failed}" in out.stdout, both
    assert "[2/5]" not in both, both  # no later stage began
    assert REVOKE not in both and "can now be revoked" not in both, both  # the old token must stay
    assert "nothing was changed: the old token stays in use — do not revoke it" in out.stderr, both
    # the fix names where this command takes the token from, not the migration's flags
    assert "GITEA_TOKEN or --token-file" not in both, both
    assert OLD not in both and NEW not in both
    assert secrets_and_node_files(sb) == world, "a Secret or a node file changed"
    assert node_files(sb) == files
    assert {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()} == restarts
    wrote = mutating_requests(sb)[writes:]
    assert not [w for w in wrote if "/secrets/" in w or "/pods/" in w], wrote  # no Secret, no node exec
