"""No credential value in any diff, output, journal or pod log — masked by structure, not by the token's value.

The nodes start with a registries.yaml that holds a docker.io mirror, ANOTHER registry's credentials,
and the plan's registry host with an OLD token; the current token is one YAML must quote. After
plan, dry-run, apply and audit --node-probes, none of the three values appears anywhere the tool
wrote or the cluster logged, and the merge kept the node's own lines byte for byte.
"""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import (
    assert_nowhere,
    fast_options,
    left_in_the_world,
    mutating_requests,
    pod_logs,
    run_cli,
    sandbox_state,
)

from sandbox.containerd import REGISTRIES_PATH
from sandbox.nodes import load_registries
from sandbox.server import Sandbox
from wizard.plan import load

OTHER = "other-registry-S3cret"
OLD = "old-token-5d1c9e0b7a3f28e4c6b1"
TOKEN = "*cur: it's-7e2a9c4f1b8d3e6a0c5f"  # an alias indicator, ': ' and a quote: YAML must quote and escape it

KEPT = """\
# the docker.io mirror and quay's robot are not the wizard's
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.example.test"
configs:
  "quay.example.test":
    auth:
      username: robot
      password: other-registry-S3cret   # rotated by the platform team
      auth: cm9ib3Q6b3RoZXItcmVnaXN0cnktUzNjcmV0
"""


def _own(host: str) -> str:
    return f"""\
  "{host}":
    tls:
      insecure_skip_verify: true
    auth:
      username: registry-user
      password: {OLD}
"""


def install_registries(sb: Sandbox, text: str) -> None:
    """Every node gets ``text`` as registries.yaml, installed before k3s last started (so it is loaded)."""
    for node in sb.cluster.nodes.values():
        node.fs.write(REGISTRIES_PATH, text.encode(), mode=0o600)
        node.fs._files[REGISTRIES_PATH].mtime = node.active_enter - 60
        load_registries(node)


def node_files(sb: Sandbox) -> dict[str, str]:
    return {name: n["files"].get(REGISTRIES_PATH) for name, n in sandbox_state(sb)["nodes"].items()}


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """One sandbox through plan, dry-run, apply, plan again and audit --node-probes; what each produced."""
    sb = Sandbox(tmp_path_factory.mktemp("secrets") / "sb",
                 fast_options(gitea_token=TOKEN, restart_seconds=(0.2, 0.3))).start()
    try:
        hosts = load(sb.plan).node_hosts
        original = KEPT + _own(hosts[0])
        install_registries(sb, original)
        args = ["--plan", str(sb.plan)]
        runs = {"plan": run_cli(sb, "plan", *args), "dry-run": run_cli(sb, "apply", *args, "--dry-run"),
                "apply": run_cli(sb, "apply", *args, "--yes")}
        runs["plan again"] = run_cli(sb, "plan", *args)
        runs["audit"] = run_cli(sb, "audit", *args, "--format", "json", "--node-probes")
        produced = {f"{k} output": r.stdout + r.stderr for k, r in runs.items()}
        produced.update(left_in_the_world(sb))  # pod logs, the journal and its mirror, cluster objects but Secrets
        state = sandbox_state(sb)
        produced["pods (specs)"] = json.dumps(state["pods"])
        yield {"sb": sb, "runs": runs, "produced": produced, "original": original, "hosts": hosts,
               "files": node_files(sb), "state": state}
    finally:
        sb.stop()


def test_no_credential_of_the_node_file_nor_any_token_in_outputs_journal_or_pod_logs(migrated, reliability):
    runs, produced = migrated["runs"], migrated["produced"]
    assert runs["apply"].returncode == 0, runs["apply"].stdout[-2000:] + runs["apply"].stderr
    assert runs["audit"].returncode == 0, runs["audit"].stdout[-2000:]
    json.loads(runs["audit"].stdout)
    # the diff is there, masked: the old and the new password are told apart by fingerprint only
    plan_out = runs["plan"].stdout
    assert f"node dellmini1:{REGISTRIES_PATH}" in plan_out
    assert "-      password: <masked>" in plan_out and "+      password: <secret, sha256:" in plan_out
    facts_logs = [k for k in produced if "ghcr2gitea-facts-" in k]
    write_logs = [k for k in produced if "ghcr2gitea-write-" in k]
    assert len(facts_logs) >= 10 and len(write_logs) == 5, sorted(produced)
    assert any(k.endswith(".json") for k in produced), "no journal file was written"
    assert json.loads(produced["journal ConfigMap"])["events"]
    assert_nowhere(produced, OTHER, OLD, TOKEN)
    reliability.record("secrets", "nodes' registries.yaml with another registry's password and an old token; a "
                       "token YAML must quote; plan, dry-run, apply, audit --node-probes",
                       "none of the three values in any output, the journal, a pod spec, or any facts/compare/"
                       "write probe's log; the diff shows fingerprints")


def test_merge_keeps_the_node_lines_byte_for_byte_and_sets_the_new_token(migrated):
    for name, text in migrated["files"].items():
        assert text.startswith(migrated["original"][:migrated["original"].index(f'  "{migrated["hosts"][0]}"')]), \
            f"{name}: the node's own lines changed:\n{text}"
        data = yaml.safe_load(text)
        assert data["configs"]["quay.example.test"]["auth"]["password"] == OTHER
        assert data["mirrors"]["docker.io"]["endpoint"] == ["https://mirror.example.test"]
        for host in migrated["hosts"]:
            assert data["configs"][host]["auth"] == {"username": "registry-user", "password": TOKEN}, name
    assert "change(s)" not in migrated["runs"]["plan again"].stdout  # the node said its password is the token
    restarts = [len(n["restarts"]) for n in migrated["state"]["nodes"].values()]
    assert restarts == [1] * 5


def test_a_credential_the_node_cannot_mask_is_refused_in_one_line_and_nothing_is_written(make_sandbox):
    sb = make_sandbox("flow")
    text = KEPT.replace("    auth:\n      username: robot\n", "    auth: {username: robot, password: flow-S3cret}\n", 1)
    text = text.replace("      password: other-registry-S3cret   # rotated by the platform team\n", "").replace(
        "      auth: cm9ib3Q6b3RoZXItcmVnaXN0cnktUzNjcmV0\n", "")
    install_registries(sb, text)
    before = node_files(sb)
    plan = run_cli(sb, "plan", "--plan", str(sb.plan))
    apply = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes")
    assert plan.returncode == 2 and apply.returncode == 1, plan.stdout[-1500:] + apply.stdout[-1500:]
    assert "cannot start" in apply.stdout
    for res in (plan, apply):
        lines = [ln for ln in res.stdout.splitlines() if "cannot mask on the node" in ln]
        assert len(lines) == 1 and f"dellmini1, dellmini3, dellmini5, dellmini2, lenovomini: {REGISTRIES_PATH} line 8:" \
            in lines[0], res.stdout[-1500:]
        assert "rewrite it in block style" in lines[0]
        assert "Traceback" not in res.stdout + res.stderr
    assert node_files(sb) == before
    assert [m for m in mutating_requests(sb) if "/leases" not in m and "/pods" not in m] == []
    for where, log in {**pod_logs(sb), "plan": plan.stdout, "apply": apply.stdout}.items():
        assert "flow-S3cret" not in log and OTHER not in log, where


def test_apply_refuses_a_node_whose_file_changed_after_plan_and_drops_its_secret(make_sandbox):
    """Stage level, in process: plan, then someone edits dellmini3's file, then apply."""
    from wizard import plan as P
    from wizard import registries as R
    from wizard.cluster import Cluster
    from wizard.credentials import Secret
    from wizard.stages.base import Context, StageFailed
    from wizard.stages.node_registries import NodeFactsSeen, NodeRegistries
    from wizard.stages.nodes import SECRET_NAME, node_facts

    sb = make_sandbox("changed")
    plan = P.load(sb.plan)
    original = KEPT + _own(plan.node_hosts[0])
    install_registries(sb, original)
    cluster = Cluster.connect(str(sb.kubeconfig))
    try:
        ctx = Context(plan=plan, cluster=cluster, token=Secret(sb.token_file.read_text().strip()))
        stage = NodeRegistries()
        changes = stage.plan(ctx, stage.inspect(ctx))
        assert len(changes) == 5
        edited = original.replace("https://mirror.example.test", "https://mirror.other-team.test")
        sb.cluster.nodes["dellmini3"].fs.write(REGISTRIES_PATH, edited.encode(), mode=0o600)
        with pytest.raises(StageFailed) as e:
            stage.apply(ctx, changes)
        assert e.value.check.name == "registries.yaml written"
        assert "dellmini3: registries.yaml changed since the wizard read it; run again" in e.value.check.cause
        files = node_files(sb)
        assert files["dellmini3"] == edited  # their edit stands, nothing of the wizard's was written over it
        assert not [f for f in sandbox_state(sb)["nodes"]["dellmini3"]["files"] if ".bak-" in f or "tmp" in f]
        assert cluster.get("Secret", SECRET_NAME, plan.wizard_namespace) is None
        again = stage.plan(ctx, NodeFactsSeen(node_facts(ctx, fresh=True)))
        assert [c.target for c in again] == [f"node dellmini3:{R.PATH}"]  # the others were written
    finally:
        cluster.close()
