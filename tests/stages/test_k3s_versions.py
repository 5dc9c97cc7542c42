"""What k3s generates from registries.yaml depends on its release (issue 15, finding 3): the containerd-config
proof reads what THIS node's release writes (its kubeletVersion) and checks the content, and the sandbox's
nodes generate what that release generates (wizard/k3sversions.py).

- before Feb 2024 (v1.25.16+k3s4): no certs.d; TLS and auth in config.toml's CRI registry section;
- the broken releases (v1.29.3+k3s1): a hosts.toml without a [host] table, which containerd ignores;
- current (v1.33.5+k3s1): certs.d/<host>/hosts.toml with a [host] table, auth in containerd 2's CRI section.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import types

import pytest
from helpers import mutating_requests, run_cli, sandbox_state

from sandbox import containerd as C
from sandbox.memfs import MemFS
from sandbox.shell import ShellContext, run_script
from wizard import proofs as P
from wizard import registries as R
from wizard.credentials import Secret
from wizard.masking import MARKER

PRE_2024, BROKEN, CURRENT = "v1.25.16+k3s4", "v1.29.3+k3s1", "v1.33.5+k3s1"
HOST, REALM = "registry.example.test", "gitea.k3s.example.test"
TOKEN = "canary-k3s-token-5b1f"


def plan(node_tls: str = "skip_verify"):
    return types.SimpleNamespace(node_hosts=(HOST, REALM), node_tls=node_tls, username="registry-user")


def wizard_file(node_tls: str = "skip_verify") -> str:
    """registries.yaml as the wizard writes it for the plan's hosts."""
    return R.render(R.merge({}, plan(node_tls), Secret(TOKEN)))


def probe(version: str, text: str | None, node_tls: str = "skip_verify",
          check: R.TokenCheck | None = None) -> tuple[R.NodeFacts, str]:
    """The wizard's facts script on a simulated node whose k3s ``version`` loaded ``text``; (facts, raw output)."""
    fs = MemFS()
    fs.mkdir("/etc/rancher/k3s", parents=True)
    for path, content in C.render(text, version).items():
        fs.mkdir(path.rsplit("/", 1)[0], parents=True)
        fs.write(path, content.encode())

    async def systemctl(argv, stdin, ctx):  # the unit's state is not what this file is about
        return 0, b"", b""

    async def go():
        ctx = ShellContext(fs=fs, hostname="n1", env={}, commands={"systemctl": systemctl})
        return await run_script(R.facts_script(plan(node_tls), check), ctx)
    res = asyncio.run(go())
    return R.parse_facts("n1", res.stdout, plan(node_tls), version), res.stdout


def proof(facts: R.NodeFacts) -> tuple[bool, str]:
    return P.ContainerdConfig().check(P.Restarted("n1", "k3s-agent", None, facts))


# ---------------------------------------------------------------------- the proof, per release
@pytest.mark.parametrize("version", [PRE_2024, "v1.29.4+k3s1", CURRENT])
@pytest.mark.parametrize("node_tls", ["skip_verify", "ca"])
def test_the_proof_passes_on_what_a_good_release_generates_from_the_wizards_file(version, node_tls):
    facts, _ = probe(version, wizard_file(node_tls), node_tls)
    ok, why = proof(facts)
    assert ok, why
    assert facts.restart_reason(plan(node_tls)) is None
    where = "config.toml" if version == PRE_2024 else f"certs.d/{HOST}/hosts.toml"
    assert where in why and version in why


def test_before_feb_2024_the_tls_mode_is_read_from_config_toml():
    # the file was loaded with the guide's skip_verify; the plan now wants the CA bundle: not loaded as planned
    facts, _ = probe(PRE_2024, wizard_file("skip_verify"), "ca")
    ok, why = proof(facts)
    assert not ok and f'config.toml registry.configs."{HOST}".tls does not trust {R.CA_PATH}' in why
    assert "does not trust" in facts.restart_reason(plan("ca"))
    # no registries.yaml loaded at all: the entry is absent, a restart is what is needed
    facts, _ = probe(PRE_2024, None)
    assert not proof(facts)[0]
    assert facts.restart_reason(plan()) == f"containerd has no config for {HOST}, {REALM} (k3s has not loaded them)"


def test_the_auth_entry_is_checked_in_the_releases_cri_section():
    text = R.render({"configs": {h: {"tls": {"insecure_skip_verify": True}} for h in (HOST, REALM)}})
    facts, _ = probe(CURRENT, text)
    ok, why = proof(facts)
    assert not ok and f'config.toml io.containerd.cri.v1.images registry.configs."{HOST}".auth is absent' in why


def test_on_a_broken_release_the_proof_names_the_missing_host_table_and_a_restart_does_not_help():
    facts, _ = probe(BROKEN, wizard_file())
    ok, why = proof(facts)
    assert not ok and why == ('certs.d/HOST/hosts.toml has no [host] table: containerd ignores it ("invalid host '
                              f"tree\") and with it the host's TLS settings — for {REALM}, {HOST} (k3s {BROKEN}, "
                              "fixed in v1.29.4+k3s1)")
    assert set(facts.broken) == {HOST, REALM}
    assert facts.restart_reason(plan()) is None  # restarting again writes the same file


def test_the_broken_releases_workaround_a_mirror_entry_passes_the_proof():
    data = R.merge({}, plan(), Secret(TOKEN))
    data["mirrors"] = {h: {"endpoint": [f"https://{h}"]} for h in (HOST, REALM)}
    facts, _ = probe(BROKEN, R.render(data))
    assert proof(facts)[0]


def test_an_unknown_release_is_judged_by_the_layout_on_disk():
    for version in (PRE_2024, CURRENT):
        _, out = probe(version, wizard_file())
        facts = R.parse_facts("n1", out, plan(), "v1.33.5")  # a kubeletVersion that is not a k3s release
        assert proof(facts)[0], facts.generated
    _, out = probe(BROKEN, wizard_file())
    assert set(R.parse_facts("n1", out, plan(), "").broken) == {HOST, REALM}


@pytest.mark.parametrize("version", [PRE_2024, BROKEN, CURRENT])
def test_the_probe_never_prints_a_credential_from_config_toml(version):
    config = C.render(wizard_file(), version)[f"{C.CONTAINERD_DIR}/config.toml"]
    assert TOKEN in config  # it is there to leak
    facts, out = probe(version, wizard_file())
    assert TOKEN not in out and base64.b64encode(TOKEN.encode()).decode()[:16] not in out
    shown = base64.b64decode(next(ln for ln in out.splitlines() if ln.startswith("config="))[7:]).decode()
    assert TOKEN not in shown and f'password = "{MARKER}"' in shown
    assert 'username = "registry-user"' in shown  # what the proof needs is still there


def test_the_probe_masks_config_toml_the_same_with_real_grep_and_sed(tmp_path):
    """The node's real tools: GNU grep and sed in sh, on the files the model generates."""
    root = tmp_path / "containerd"
    for path, content in C.render(wizard_file(), PRE_2024).items():
        target = root / path.removeprefix(C.CONTAINERD_DIR + "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    script = R.facts_script(plan()).replace(C.CONTAINERD_DIR, str(root))
    script = re.sub(r"/etc/rancher/k3s", str(tmp_path / "etc"), script)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30).stdout
    assert TOKEN not in out
    facts = R.parse_facts("n1", out, plan(), PRE_2024)
    assert proof(facts)[0], facts.generated


def probe_real(tmp_path, version: str, text: str, check: R.TokenCheck) -> tuple[R.NodeFacts, str]:
    """The same probe in sh with the machine's GNU grep and sed, on the files the model generates."""
    root = tmp_path / "containerd"
    for path, content in C.render(text, version).items():
        target = root / path.removeprefix(C.CONTAINERD_DIR + "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    script = R.facts_script(plan(), check).replace(C.CONTAINERD_DIR, str(root))
    script = re.sub(r"/etc/rancher/k3s", str(tmp_path / "etc"), script)
    res = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert "unsupported" not in res.stderr and "unknown command" not in res.stderr, res.stderr
    return R.parse_facts("n1", res.stdout, plan(), version), res.stdout


@pytest.mark.parametrize("shell", ["simulated", "real"])
@pytest.mark.parametrize("version", [PRE_2024, CURRENT])
def test_the_proof_needs_the_token_itself_in_containerds_config_not_just_a_password(tmp_path, shell, version):
    """k3s that loaded an earlier registries.yaml (an older token: a rotation whose restart did not happen) has
    a password in config.toml all the same: the proof compares it with the token, salted on the node, and
    fails naming the stale password, and the node needs a restart. Go's %q quoting (k3s's template) included."""
    for loaded, token, same in (("tok-now-1", "tok-now-1", True), ("tok-old-0", "tok-now-1", False),
                                ('q"b\\s', 'q"b\\s', True), ('q"b\\s', 'q"b\\t', False)):
        text = R.render(R.merge({}, plan(), Secret(loaded)))
        check = R.TokenCheck.of(Secret(token))
        at = tmp_path / f"{len(loaded)}-{same}"
        at.mkdir()
        facts, out = probe(version, text, check=check) if shell == "simulated" else \
            probe_real(at, version, text, check)
        assert loaded not in out and token not in out and check.want not in out
        assert [ln for ln in out.splitlines() if ln.startswith("auth_same_")] == \
            [f"auth_same_{i}={int(same)}" for i in range(2)], (loaded, token)
        ok, why = proof(facts)
        assert ok is same, why
        if same:
            assert "(the token)" in why and facts.restart_reason(plan()) is None
        else:
            assert f'registry.configs."{HOST}".auth holds another password than the token' in why
            assert "another password than the token" in (facts.restart_reason(plan()) or "")
    # without a token to compare (an audit with only the GHCR side), presence is all that is judged
    facts, out = probe(version, R.render(R.merge({}, plan(), Secret("tok-old-0"))))
    assert "auth_same_" not in out and proof(facts)[0]


# ---------------------------------------------------------------------- the whole migration, per release
@pytest.mark.parametrize("version", [PRE_2024, CURRENT])
def test_apply_then_audit_pass_on_a_good_release(make_sandbox, version):
    sb = make_sandbox(servers=2, agents=1, k3s_version=version, restart_seconds=(0.3, 0.5))
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    nodes = sandbox_state(sb)["nodes"]
    assert {n: len(v["restarts"]) for n, v in nodes.items()} == dict.fromkeys(nodes, 1)
    audit = run_cli(sb, "audit", "--plan", str(sb.plan), "--node-probes")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()} == dict.fromkeys(nodes, 1)


def test_on_a_broken_release_the_rollout_stops_at_the_first_node_with_the_diagnosis(make_sandbox):
    sb = make_sandbox(servers=2, agents=1, k3s_version=BROKEN, restart_seconds=(0.3, 0.5))
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    assert "Rolling restart: FAILED" in out and "has no [host] table" in out and BROKEN in out
    assert "upgrade k3s to v1.27.13, v1.28.9, v1.29.4" in out
    counts = {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()}
    assert counts == {"dellmini1": 1, "server2": 0, "agent1": 0}
    # run again: the rollout refuses before restarting another node of that release
    again = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert again.returncode == 1 and "has no [host] table" in again.stdout
    assert {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()} == counts
    audit = run_cli(sb, "audit", "--plan", str(sb.plan), "--node-probes", "--format", "json")
    assert audit.returncode != 0 and "k3s-hosts-toml-no-host-table" in audit.stdout


def test_a_node_running_openrc_stops_the_run_before_anything_is_written(make_sandbox):
    sb = make_sandbox(servers=1, agents=2, openrc={"agent2"}, restart_seconds=(0.3, 0.5))
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cannot start" in res.stdout  # a precheck: the run stops before its first write
    assert "agent2 runs OpenRC (/etc/init.d/k3s*, no systemctl)" in res.stdout
    writes = [m for m in mutating_requests(sb) if "/leases" not in m and "/pods" not in m]
    assert writes == []
    assert "cannot restart such a node" in res.stdout and "Traceback" not in res.stdout + res.stderr
    nodes = sandbox_state(sb)["nodes"]
    assert {n: len(v["restarts"]) for n, v in nodes.items()} == dict.fromkeys(nodes, 0)
    assert [n for n, v in nodes.items() if R.PATH in v["files"]] == []  # no registries.yaml written anywhere
