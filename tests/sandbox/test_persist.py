"""A kept world (Options.persist): the sandbox stopped and started again in its folder is the same cluster."""

from __future__ import annotations

import json
import stat

import pytest
from helpers import fast_options, run_cli, sandbox_state

from sandbox import persist
from sandbox.server import Sandbox


def _kube_system_uid(sb: Sandbox) -> str:
    from sandbox.cluster import NAMESPACE
    return sb.cluster.store.get(NAMESPACE, "", "kube-system")["metadata"]["uid"]


def test_a_migrated_world_comes_back_migrated_and_a_new_one_is_not(tmp_path):
    folder = tmp_path / "demo"
    sb = Sandbox(folder, fast_options(persist=True)).start()
    try:
        uid, token = _kube_system_uid(sb), sb.token_file.read_text()
        res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
        assert res.returncode == 0, res.stdout + res.stderr
        restarts = {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()}
        gitea = sandbox_state(sb)["registries"]["gitea"]
        assert gitea  # the Images stage copied them
    finally:
        sb.stop()
    saved = folder / persist.WORLD
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600  # it holds the world's tokens and CA keys
    assert token.strip() in saved.read_text()

    again = Sandbox(folder, fast_options(persist=True)).start()
    try:
        assert _kube_system_uid(again) == uid  # the same cluster: the journal's key matches
        assert again.token_file.read_text() == token
        state = sandbox_state(again)
        assert state["registries"]["gitea"] == gitea
        assert {n: len(v["restarts"]) for n, v in state["nodes"].items()} == restarts
        # nothing left to do, every check passes: objects, node files and what k3s loaded, images, pods
        # (made again by their controllers, pulled from Gitea through each node's containerd config)
        plan = run_cli(again, "plan", "--plan", str(again.plan))
        assert plan.returncode == 0, plan.stdout + plan.stderr
        audit = run_cli(again, "audit", "--plan", str(again.plan), "--node-probes")
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        again.stop()

    # without a kept world the same folder is a new cluster
    saved.unlink()
    fresh = Sandbox(folder, fast_options(persist=True)).start()
    try:
        assert _kube_system_uid(fresh) != uid
        assert sandbox_state(fresh)["registries"]["gitea"] == {}
    finally:
        fresh.stop()


def test_a_world_saved_with_other_options_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "demo"
    Sandbox(folder, fast_options(persist=True)).start().stop()
    with pytest.raises(persist.WorldMismatch, match=r"other --servers, --agents: give the same options"):
        persist.load(folder, fast_options(persist=True, servers=1, agents=1))
    (folder / persist.WORLD).write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="another version of the sandbox"):
        persist.load(folder, fast_options(persist=True))
