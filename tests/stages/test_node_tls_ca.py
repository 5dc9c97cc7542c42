"""registry.node_tls: ca, end to end: every node gets a CA bundle that trusts the registry host AND the realm.

containerd fetches the realm token with the REGISTRY host's TLS settings (test-environment.md, "containerd
(real)"), so the registry host's ``ca_file`` must hold the realm's certificate too: the bundle is
registry.ca_file's certificates, then the auth proxy's certificate, which Traefik presents for the realm host
in this mode. The sandbox's containerd reads the file from the node's disk at every pull, as the real one does.
"""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import fast_options, run_cli

from sandbox.server import Sandbox
from wizard import plan as plan_mod
from wizard import registries as R
from wizard.cluster import Cluster

NODES = ("dellmini1", "dellmini2", "dellmini3", "dellmini5", "lenovomini")
BROKEN = "dellmini2"  # an agent


def ca_plan(sb: Sandbox, path) -> str:
    data = yaml.safe_load(sb.plan.read_text())
    data["registry"]["node_tls"] = "ca"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def node_file(sb: Sandbox, node: str, path: str) -> tuple[bytes | None, int | None]:
    def read():
        fs = sb.cluster.nodes[node].fs
        return (fs.read(path), fs.stat(path).mode & 0o777) if fs.isfile(path) else (None, None)
    return sb.call(read)


def audit(sb: Sandbox, plan: str) -> tuple[int, dict[str, dict]]:
    res = run_cli(sb, "audit", "--plan", plan, "--format", "json", "--node-probes")
    report = json.loads(res.stdout)
    return res.returncode, {c["name"]: c for st in report["stages"] for c in st["checks"]}


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """One sandbox after `apply --yes` with node_tls: ca."""
    d = tmp_path_factory.mktemp("nodetls")
    sb = Sandbox(d / "sb", fast_options(restart_seconds=(0.05, 0.1)), bookmark_interval=0.5).start()
    try:
        plan = ca_plan(sb, d / "plan-ca.yaml")
        res = run_cli(sb, "apply", "--plan", plan, "--yes")
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
        yield sb, plan
    finally:
        sb.stop()


def expected_bundle(sb: Sandbox, plan: str) -> str:
    p = plan_mod.load(plan)
    cluster = Cluster.connect(str(sb.kubeconfig), patience=30)
    try:
        realm = cluster.get("ConfigMap", p.proxy_ca_configmap, p.proxy_namespace)["data"]["ca.crt"]
    finally:
        cluster.close()
    return R.bundle_text(sb.ca_file.read_text(), realm)


def test_apply_puts_the_bundle_on_every_node_and_every_node_pull_verifies(migrated):
    sb, plan = migrated
    p = plan_mod.load(plan)
    bundle = expected_bundle(sb, plan)
    assert len(R.pem_blocks(bundle)) == len(R.pem_blocks(sb.ca_file.read_text())) + 1  # the realm's certificate
    for node in NODES:
        text, mode = node_file(sb, node, R.CA_PATH)
        assert text is not None, f"{node}: no {R.CA_PATH}"
        assert text.decode() == bundle and mode == 0o644, node
        reg = yaml.safe_load(node_file(sb, node, R.PATH)[0])
        for host in p.node_hosts:
            assert reg["configs"][host]["tls"] == {"ca_file": R.CA_PATH}, (node, host)
    rc, checks = audit(sb, plan)
    assert rc == 0, [c for c in checks.values() if c["status"] == "fail"]
    pulls = [c for n, c in checks.items() if n.startswith(NODES) and (": containerd on the node pulls " in n or ": pull-test pod pulls " in n)]
    assert len(pulls) == 2 * len(NODES) and all(c["status"] == "pass" for c in pulls), pulls
    for node in NODES:
        assert checks[f"{node}: CA bundle"]["status"] == "pass"
    assert "nodes verify the registry's certificate" not in checks  # no skip_verify warning in this mode


def test_a_bundle_without_the_realms_certificate_fails_the_node_pull_with_x509(migrated):
    sb, plan = migrated
    good, _ = node_file(sb, BROKEN, R.CA_PATH)
    registry_only = R.bundle_text(sb.ca_file.read_text(), "")
    sb.call(lambda: sb.cluster.nodes[BROKEN].fs.write(R.CA_PATH, registry_only.encode(), mode=0o644))
    try:
        rc, checks = audit(sb, plan)
        assert rc == 1
        pull = checks[f"{BROKEN}: containerd on the node pulls {plan_mod.load(plan).images[0].target}:latest"]
        assert pull["status"] == "fail"
        out = pull["evidence"]["output"]
        assert "failed to fetch oauth token" in out and "x509: certificate signed by unknown authority" in out, out
        assert checks[f"{BROKEN}: CA bundle"]["status"] == "fail"
        assert "differs from the bundle" in checks[f"{BROKEN}: CA bundle"]["cause"]
        others = [c for n, c in checks.items() if ": containerd on the node pulls " in n and not n.startswith(BROKEN)]
        assert others and all(c["status"] == "pass" for c in others)
    finally:
        sb.call(lambda: sb.cluster.nodes[BROKEN].fs.write(R.CA_PATH, good, mode=0o644))


def test_plan_shows_a_missing_bundle_as_a_change(migrated):
    sb, plan = migrated
    good, _ = node_file(sb, BROKEN, R.CA_PATH)
    sb.call(lambda: sb.cluster.nodes[BROKEN].fs.remove(R.CA_PATH))
    try:
        res = run_cli(sb, "plan", "--plan", plan)
        assert f"node {BROKEN}:{R.CA_PATH}" in res.stdout, res.stdout[-3000:] + res.stderr[-1000:]
        assert not any(f"node {n}:{R.CA_PATH}" in res.stdout for n in NODES if n != BROKEN)
    finally:
        sb.call(lambda: sb.cluster.nodes[BROKEN].fs.write(R.CA_PATH, good, mode=0o644))


def test_skip_verify_is_the_default_and_audit_warns_naming_the_safer_mode(sandbox):
    rc, checks = audit(sandbox, str(sandbox.plan))
    warn = checks["nodes verify the registry's certificate"]
    assert warn["status"] == "warn" and "registry.node_tls: ca" in warn["fix"]
    res = run_cli(sandbox, "audit", "--plan", str(sandbox.plan), "--format", "text")  # without node probes too
    assert "warn nodes verify the registry's certificate" in res.stdout and "registry.node_tls: ca" in res.stdout


def test_the_bundle_holds_only_certificates_and_the_realms_once():
    a = "-----BEGIN CERTIFICATE-----\nQUFB\n-----END CERTIFICATE-----\n"
    b = "-----BEGIN CERTIFICATE-----\r\nQkJC\r\n-----END CERTIFICATE-----\r\n"
    assert R.bundle_text("# my LAN CA\n" + a + "trailing text", b) == a + b.replace("\r\n", "\n")
    assert R.bundle_text(a, a) == a  # registry.ca_file already trusts the realm


def test_export_gives_nodes_the_same_bundle_and_never_the_realms_key(migrated, tmp_path):
    sb, plan = migrated
    p = plan_mod.load(plan)
    out = tmp_path / "gitops"
    res = run_cli(sb, "export", "--plan", plan, "--dir", str(out))
    assert res.returncode == 0, res.stderr
    for node in NODES:
        assert (out / f"nodes/{node}/gitea-registry-ca.crt").read_text() == expected_bundle(sb, plan)
    ing = yaml.safe_load((out / f"{p.ingress_namespace}/ingress.networking.k8s.io_{p.ingress_name}.yaml").read_text())
    assert ing["spec"]["tls"] == [{"hosts": [p.realm_hostname], "secretName": p.proxy_tls_secret}]
    copy = yaml.safe_load((out / f"{p.ingress_namespace}/secret_{p.proxy_tls_secret}.yaml").read_text())
    assert copy["stringData"] == {"tls.crt": "REPLACE-ME", "tls.key": "REPLACE-ME"} and "data" not in copy
