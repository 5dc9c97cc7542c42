"""Bad input: one line naming the field and the fix, a non-zero exit, and nothing touched."""

from __future__ import annotations

import os
import stat

import kubernetes_validate
import pytest
import yaml
from helpers import mutating_requests, run_cli, sandbox_state

from wizard import plan as P
from wizard.credentials import Secret
from wizard.nodeexec import pod_manifest
from wizard.stages.base import Context
from wizard.stages.objects import ObjectStage

GOOD = {
    "version": 1,
    "gitea": {"internal_service": "gitea-http.gitea-system.svc.cluster.local:3000",
              "root_url": "https://gitea.k3s.example.test/", "username": "registry-user", "org": "jaybrto"},
    "registry": {"host": "registry.example.test", "legacy_hosts": ["registry.k3s.example.test"]},
    "images": [{"source": "ghcr.io/jaybrto/gwa-webhook", "target": "registry.example.test/jaybrto/gwa-webhook"}],
}


def variant(path: str, value):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    cur = data
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur[k]
    if value is KeyError:
        del cur[keys[-1]]
    else:
        cur[keys[-1]] = value
    return data


CASES = [
    ("registry.host", "gitea-http.gitea-system.svc.cluster.local:3000", "registry.host", "cluster DNS"),
    ("registry.legacy_hosts", ["registry.svc.cluster.local"], "registry.legacy_hosts[0]", "cluster DNS"),
    ("registry.host", "https://registry.example.test", "registry.host", "no scheme"),
    ("registry.host", "bad_host!", "registry.host", "not a valid host name"),
    ("gitea.root_url", "http://gitea.k3s.example.test/", "gitea.root_url", "https://"),
    ("gitea.root_url", "https://gitea.gitea-system.svc.cluster.local/", "gitea.root_url", "cluster DNS"),
    ("gitea.colour", "blue", "gitea.colour", "unknown key"),
    ("extras", {"a": 1}, "extras", "unknown section"),
    ("images", [], "images", "list the images"),
    ("images", [{"source": "docker.io/x/y", "target": "registry.example.test/x/y"}], "images[0].source",
     "ghcr.io/ORG/NAME"),
    ("images", [{"source": "ghcr.io/jaybrto/a", "target": "other.example.test/jaybrto/a"}], "images[0].target",
     "registry.host"),
    ("gitea.org", "CHANGE-ME", "gitea.org", "CHANGE-ME"),
    ("proxy", {"cert_days": 0}, "proxy.cert_days", "between 1 and 36500"),
    ("proxy", {"coredns_ip": "kube-dns"}, "proxy.coredns_ip", "IP address"),
    ("network", {"resolve": ["registry.example.test:443"]}, "network.resolve[0]", "HOST:PORT:ADDRESS"),
    ("version", 2, "version", "version 1"),
]


@pytest.mark.parametrize("path,value,field,words", CASES)
def test_bad_plan_names_the_field_and_the_fix(path, value, field, words, reliability):
    with pytest.raises(P.PlanError) as err:
        P.from_dict(variant(path, value))
    line = next(p for p in err.value.problems if f": {field}:" in p)
    assert words.lower() in line.lower()
    assert "\n" not in line
    reliability.record("bad plan", f"`{path}` = `{value!r}`", f"exit 2 before any request: `{line}`")


def test_good_plan_loads_with_the_guides_defaults():
    plan = P.from_dict(GOOD)
    assert plan.push_secret == "gitea-registry-push" and plan.pull_secret == "gitea-registry-secret"
    assert plan.realm_host == "gitea.k3s.example.test"
    assert plan.node_hosts == ("registry.example.test", "registry.k3s.example.test", "gitea.k3s.example.test")


def test_cli_refuses_a_bad_plan_before_touching_the_cluster(sandbox, tmp_path):
    bad = tmp_path / "plan.yaml"
    bad.write_text(yaml.safe_dump(variant("registry.host", "gitea-http.gitea-system.svc.cluster.local:3000")))
    before = len(sandbox_state(sandbox)["requests"])
    for cmd in ("plan", "apply", "audit"):
        extra = ["--yes"] if cmd == "apply" else []
        res = run_cli(sandbox, cmd, "--plan", str(bad), "--kubeconfig", str(sandbox.kubeconfig), *extra)
        assert res.returncode == 2, (cmd, res.stdout, res.stderr)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        # one line per problem, each naming its field; the first is the cluster DNS name
        assert all(ln.startswith("ghcr2gitea: plan: ") for ln in lines)
        assert "registry.host" in lines[0] and "containerd" in lines[0]
    assert len(sandbox_state(sandbox)["requests"]) == before


def test_malformed_yaml_is_one_line_with_the_position(tmp_path, reliability):
    f = tmp_path / "plan.yaml"
    f.write_text("gitea:\n  root_url: [unclosed\n")
    res = run_cli(None, "plan", "--plan", str(f))
    assert res.returncode == 2
    assert "line" in res.stderr and "column" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    reliability.record("bad plan", "malformed YAML", f"exit 2: `{res.stderr.strip().split(': ', 1)[1]}`")


def test_token_file_readable_by_others_is_refused(sandbox, tmp_path, reliability):
    tf = tmp_path / "token"
    tf.write_text(sandbox.token_file.read_text())
    os.chmod(tf, 0o644)
    res = run_cli(sandbox, "apply", "--plan", str(sandbox.plan), "--token-file", str(tf), "--yes", token=None)
    assert res.returncode == 2
    assert "chmod 600" in res.stderr and str(tf) in res.stderr
    assert mutating_requests(sandbox) == []
    reliability.record("bad input", "token file with mode 644", "exit 2, nothing written: `--token-file …: "
                       "readable by group or others (mode 644); run: chmod 600 …`")
    os.chmod(tf, stat.S_IRUSR | stat.S_IWUSR)
    res = run_cli(sandbox, "plan", "--plan", str(sandbox.plan), "--token-file", str(tf), token=None)
    assert res.returncode == 3, res.stderr


def test_missing_kubeconfig_and_unknown_context(sandbox, tmp_path, reliability):
    res = run_cli(None, "plan", "--plan", str(sandbox.plan), "--kubeconfig", str(tmp_path / "nope"),
                  token="x")
    assert res.returncode == 2 and "kubeconfig" in res.stderr and "not found" in res.stderr
    res = run_cli(sandbox, "plan", "--plan", str(sandbox.plan), "--context", "elsewhere")
    assert res.returncode == 2 and "elsewhere" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "its contexts: sandbox" in res.stderr and "Traceback" not in res.stderr  # what to pass instead
    reliability.record("bad input", "missing kubeconfig; unknown context", "exit 2 with a one-line error naming "
                       "the file, or the context and the kubeconfig's contexts")


def test_context_pointing_nowhere(sandbox, tmp_path, reliability):
    cfg = yaml.safe_load(sandbox.kubeconfig.read_text())
    cfg["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # discard port: nothing listens
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump(cfg))
    res = run_cli(None, "audit", "--plan", str(sandbox.plan), "--kubeconfig", str(kc), "--api-patience", "1",
                  token="x", timeout=200)
    assert res.returncode == 2
    assert "unreachable" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    reliability.record("bad input", "a context whose server answers nothing", "exit 2 after --api-patience: "
                       "one line saying the API is unreachable and that rerunning resumes")


def _all_generated(sandbox) -> list[dict]:
    """Every object the stages would apply, and the pods the wizard runs, for this sandbox's plan."""
    from wizard.cluster import Cluster
    from wizard.stages import STAGES
    plan = P.load(sandbox.plan)
    cluster = Cluster.connect(str(sandbox.kubeconfig))
    ctx = Context(plan=plan, cluster=cluster, token=Secret(sandbox.token_file.read_text().strip()))
    objs = []
    for st in STAGES:
        if isinstance(st, ObjectStage):
            objs += st.desired(ctx, st.inspect(ctx).live)
    objs.append(pod_manifest("dellmini1", "true", namespace="kube-system", image=plan.helper_image, stage="x",
                             purpose="facts", run_id="abcdef",
                             env=[{"name": "REGISTRIES_YAML", "valueFrom": {"secretKeyRef": {"name": "s",
                                                                                            "key": "dellmini1"}}}]))
    cluster.close()
    return objs


@pytest.mark.parametrize("version", ["1.28", "1.29", "1.30", "1.31", "1.32", "1.33"])
def test_every_generated_manifest_validates_strictly(sandbox, version):
    for obj in _all_generated(sandbox):
        kubernetes_validate.validate(obj, version, strict=True)


def test_wrong_token_writes_nothing_to_disk_either(sandbox, tmp_path, reliability):
    state = tmp_path / "state"
    res = run_cli(sandbox, "apply", "--plan", str(sandbox.plan), "--yes", token="expired-or-wrong",
                  env={"XDG_STATE_HOME": str(state)})
    assert res.returncode == 1
    assert not state.exists() or not any(state.rglob("*")), "a run that changed nothing left a journal"
    assert [m for m in mutating_requests(sandbox) if "/leases" not in m] == []
    reliability.record("bad input", "wrong or expired Gitea token", "stops at Credentials, exit 1, cause and fix "
                       "printed; nothing written to the cluster (but the run's Lease) or to disk")


def test_a_node_with_invalid_registries_yaml_stops_before_any_write(make_sandbox, tmp_path, reliability):
    sb = make_sandbox(existing_registries="configs:\n  registry.example.test:\n    tls: [unclosed\n")
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", env={"XDG_STATE_HOME": str(tmp_path / "s")})
    assert res.returncode == 1, res.stdout
    assert "cannot start" in res.stdout and "not valid YAML at line" in res.stdout
    assert "dellmini1:/etc/rancher/k3s/registries.yaml" in res.stdout
    # only the short-lived read-only probe pods (created, then deleted) and the lock touched the cluster
    writes = [m for m in mutating_requests(sb) if "/leases" not in m and "/pods" not in m]
    assert writes == []
    state = sandbox_state(sb)
    assert all(p["deleted"] for p in state["pods"] if "ghcr2gitea.io/role" in (p.get("labels") or {}))
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*"))
    reliability.record("bad input", "a node whose registries.yaml is not valid YAML", "exit 1 before any write, "
                       "naming the node, the file, line and column; only read-only probe pods ran (and were deleted)")


def test_an_unreachable_registry_host_is_named(sandbox, tmp_path, reliability):
    plan = yaml.safe_load(sandbox.plan.read_text())
    plan["network"]["resolve"] = [r for r in plan["network"]["resolve"] if not r.startswith("registry.example")]
    f = tmp_path / "plan.yaml"
    f.write_text(yaml.safe_dump(plan))
    res = run_cli(sandbox, "apply", "--plan", str(f), "--yes")
    assert res.returncode == 1
    assert "registry.example.test" in res.stdout and "network.resolve" in res.stdout
    assert [m for m in mutating_requests(sandbox) if "/leases" not in m] == []
    reliability.record("bad input", "registry host unreachable from this machine", "stops at Credentials, exit 1, "
                       "naming the host and network.resolve / registry.ca_file as the fix; nothing written")
