"""Every catalogue entry the sandbox can reproduce, reproduced: break one thing, get the right diagnosis.

Each test starts from a migrated sandbox (``apply`` succeeded), breaks exactly the one thing a
catalogue entry describes — through the Kubernetes API and nsenter pods as an operator would,
or, for what lives outside the cluster (Gitea's ROOT_URL, the LAN), through the sandbox's
fault hooks — then runs the relevant stages' ``verify`` as ``audit --node-probes`` does, and
asserts that every failing check carries that entry and that at least one does.

Entries the sandbox cannot reproduce are proven against the real stack instead
(tests/real: anonymous-token, name-mismatch, ip-without-san, token-rejected's neighbours).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time

import pytest
import yaml
from helpers import fast_options, poll

from sandbox import cluster as C
from wizard import plan as plan_mod
from wizard.certs import make_proxy_cert
from wizard.cluster import Cluster
from wizard.credentials import Secret
from wizard.diagnose import BY_KEY, CATALOGUE
from wizard.engine import Runner
from wizard.registries import PATH as REGISTRIES
from wizard.stages import BY_KEY as STAGES
from wizard.stages.base import FAIL, Check, Context
from wizard.stages.nodes import node_exec

NODE = "dellmini2"  # an agent: restarting it never takes the API away


# ------------------------------------------------------------------ helpers
class _Everything(set):
    def __contains__(self, item) -> bool:
        return True


class Migrated:
    """A sandbox after a successful apply, and the operator's handles on it."""

    def __init__(self, sb):
        self.sb = sb
        self.plan = plan_mod.load(sb.plan)
        self.token = Secret(sb.token_file.read_text().strip())
        self.cluster = Cluster.connect(str(sb.kubeconfig), patience=30)
        # the operator's kubectl: breaks objects whoever owns them (the wizard's connection may not)
        self.operator = Cluster.connect(str(sb.kubeconfig), patience=30)
        self.operator.adopted = _Everything()
        out: list[str] = []
        rc = Runner(self.context(audit=False), out.append).apply()
        assert rc == 0, "\n".join(out)

    def context(self, *, audit: bool = True, plan=None, token: Secret | None | str = "default") -> Context:
        return Context(plan=plan or self.plan, cluster=self.cluster, token=self.token if token == "default" else token,
                       audit=audit, node_probes=True, node_timeout=30)

    def verify(self, *stages: str, **ctx_kw) -> list[tuple[str, Check]]:
        ctx = self.context(**ctx_kw)
        return [(key, c) for key in stages for c in STAGES[key].verify(ctx)]

    # -- breaking things as an operator would
    def on_node(self, node: str, script: str, **env: str) -> str:
        res = node_exec(self.context(audit=False)).run_many(
            {node: script}, stage="test", purpose="break", timeout=30,
            env={node: [{"name": k, "value": v} for k, v in env.items()]})[node]
        assert res.ok, res.output
        return res.output

    def registries(self, node: str) -> dict:
        return yaml.safe_load(self.on_node(node, f"cat {REGISTRIES}"))

    def write_registries(self, node: str, data: dict, *, restart: bool) -> None:
        unit = "k3s-agent" if node in ("dellmini2", "lenovomini") else "k3s"
        script = f'printf "%s" "$REG" > {REGISTRIES}' + (f"\nsystemctl restart {unit}" if restart else "")
        self.on_node(node, script, REG=yaml.safe_dump(data))
        if restart:
            self.wait_node_ready(node)

    def wait_node_ready(self, node: str, timeout: float = 20) -> None:
        def back() -> bool:
            obj = self.cluster.get("Node", node) or {}
            ready = [c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
            state = self.sb.call(lambda: self.sb.cluster.nodes[node].state)
            return bool(ready) and ready[0]["status"] == "True" and state == "active"
        poll(back, timeout=timeout, what=f"{node} back: Ready and its unit active")

    def restart_proxy(self) -> None:
        p = self.plan
        for pod in self.cluster.list("Pod", p.proxy_namespace, labels=f"app={p.proxy_name}"):
            self.operator.delete("Pod", pod["metadata"]["name"], p.proxy_namespace)
        def running() -> bool:
            pods = self.cluster.list("Pod", p.proxy_namespace, labels=f"app={p.proxy_name}")
            return bool(pods) and all((x.get("status") or {}).get("phase") == "Running" for x in pods)
        poll(running, timeout=20, what="the auth proxy back, its pods Running")

    def set_proxy_cert(self, cert_pem: bytes, key_pem: bytes, *, ca_pem: bytes | None = None) -> None:
        p = self.plan
        self.operator.patch("Secret", p.proxy_tls_secret, p.proxy_namespace,
                            {"data": {"tls.crt": base64.b64encode(cert_pem).decode(),
                                      "tls.key": base64.b64encode(key_pem).decode()}})
        self.operator.patch("ConfigMap", p.proxy_ca_configmap, p.proxy_namespace,
                            {"data": {"ca.crt": (ca_pem or cert_pem).decode()}})

    def close(self) -> None:
        self.cluster.close()
        self.operator.close()


@pytest.fixture
def migrated(make_sandbox):
    m = Migrated(make_sandbox(restart_seconds=(0.05, 0.1)))
    yield m
    m.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One migrated sandbox for breaks that change nothing in it (the operator's inputs)."""
    from sandbox.server import Sandbox
    sb = Sandbox(tmp_path_factory.mktemp("shared") / "sb", fast_options(restart_seconds=(0.05, 0.1)),
                 bookmark_interval=0.5).start()
    m = Migrated(sb)
    yield m
    m.close()
    sb.stop()


def expired_cert(hostname: str):
    """A certificate like the wizard's, but one that expired yesterday."""
    import datetime as dt

    from wizard.certs import make_proxy_cert
    return make_proxy_cert(hostname, 9, start=dt.datetime.now(dt.UTC) - dt.timedelta(days=10))


def diagnosis_of(check: Check) -> str | None:
    if isinstance(check.evidence, dict) and check.evidence.get("diagnosis"):
        return check.evidence["diagnosis"]
    return next((d.key for d in CATALOGUE if check.fix == d.fix), None)


def assert_diagnosed(results: list[tuple[str, Check]], key: str, *, at_least: int = 1) -> list[Check]:
    failing = [(stage, c) for stage, c in results if c.status == FAIL]
    wrong = [(stage, c.name, diagnosis_of(c), c.cause[:200]) for stage, c in failing if diagnosis_of(c) != key]
    assert not wrong, f"checks failing without the {key!r} diagnosis: {wrong}"
    assert len(failing) >= at_least, f"want {at_least}+ failing checks diagnosed {key!r}, got " \
                                     f"{[(s, c.name) for s, c in failing]}"
    for _, c in failing:
        assert BY_KEY[key].fix == c.fix, f"{c.name}: the fix is not the catalogue's: {c.fix}"
    return [c for _, c in failing]


def names(checks: list[Check]) -> list[str]:
    return [c.name for c in checks]


# ------------------------------------------------------------------ a healthy cluster is healthy
def test_migrated_cluster_passes_every_auth_check_from_every_vantage(shared):
    results = shared.verify("credentials", "ingress", "verify")
    failing = [(s, c.name, c.cause) for s, c in results if c.status == FAIL]
    assert not failing, failing
    verify = [c.name for s, c in results if s == "verify"]
    nodes = ["dellmini1", "dellmini3", "dellmini5", "dellmini2", "lenovomini"]
    assert sum(n.endswith("containerd on the node pulls " + shared.plan.images[0].target + ":latest") for n in verify) == 5
    assert sum(n.startswith(tuple(f"{x}: pull-test pod pulls " for x in nodes)) for n in verify) == 5
    assert "Kaniko's view: realm through the proxy" in verify


# ------------------------------------------------------------------ breaks of the operator's inputs
def test_wrong_token(shared):
    results = shared.verify("credentials", token=Secret("definitely-not-the-token"))
    assert_diagnosed(results, "wrong-token")


def test_read_only_user_may_pull_but_not_push(shared):
    plan = dataclasses.replace(shared.plan, username=C.READER)
    reader = Secret((shared.sb.dir / "reader-token").read_text().strip())
    results = shared.verify("credentials", plan=plan, token=reader)
    [check] = assert_diagnosed(results, "pull-only-token")
    assert check.name == "token may push"
    assert any(c.name == "token accepted by Gitea" and c.status == "pass" for _, c in results)


def test_plan_without_the_registry_ca_is_unknown_authority(shared):
    plan = dataclasses.replace(shared.plan, registry_ca_file=None)
    results = shared.verify("verify", plan=plan)
    failing = assert_diagnosed(results, "unknown-authority", at_least=3)
    assert "x509: certificate signed by unknown authority" in failing[0].cause


def test_registry_host_without_resolve_mapping_is_unreachable_and_never_looked_up(shared):
    plan = dataclasses.replace(shared.plan, resolve=tuple(r for r in shared.plan.resolve
                                                          if not r.startswith(C.REGISTRY_HOST + ":")))
    results = shared.verify("verify", plan=plan)
    failing = assert_diagnosed(results, "registry-unreachable", at_least=3)
    assert all("no --resolve mapping" in c.cause for c in failing)


def test_realm_host_without_resolve_mapping_is_unreachable(shared):
    plan = dataclasses.replace(shared.plan, resolve=tuple(r for r in shared.plan.resolve
                                                          if not r.startswith(C.REALM_HOST + ":")))
    assert_diagnosed(shared.verify("ingress", "verify", plan=plan), "realm-unreachable", at_least=3)


def test_plan_root_url_on_another_host_is_realm_host_mismatch(shared):
    plan = dataclasses.replace(shared.plan, root_url=f"https://{shared.sb.cluster.host(C.WEB_HOST)}/")
    failing = assert_diagnosed(shared.verify("verify", plan=plan), "realm-host-mismatch", at_least=4)
    assert "Kaniko's view: realm through the proxy" in names(failing)  # the pod sees the same challenge


# ------------------------------------------------------------------ breaks in the cluster
def test_missing_tls_ingress_is_token_endpoint_404(migrated):
    p = migrated.plan
    migrated.operator.delete("Ingress", p.ingress_name, p.ingress_namespace)
    failing = assert_diagnosed(migrated.verify("ingress", "verify"), "token-endpoint-404", at_least=2 + 2 + 10)
    assert {"TLS Ingress for the realm host", "realm answers a token over HTTPS"} <= set(names(failing))
    assert any("containerd on the node pulls" in n for n in names(failing)) and any(
        ": pull-test pod pulls " in n for n in names(failing))


def test_websecure_on_the_http_ingress_without_tls(migrated):
    p = migrated.plan
    migrated.operator.delete("Ingress", p.ingress_name, p.ingress_namespace)
    migrated.operator.patch("Ingress", "gitea-k3s-alias", "gitea-system", {"metadata": {"annotations": {
        "traefik.ingress.kubernetes.io/router.entrypoints": "web,websecure"}}})
    # K3s's Traefik serves it on 443 with its default certificate: nodes that skip verification (the guide's
    # default) still get tokens, but the realm presents no certificate that names it
    failing = assert_diagnosed(migrated.verify("ingress"), "websecure-without-tls", at_least=1)
    assert names(failing) == ["TLS Ingress for the realm host"]


def test_stale_token_in_the_push_secret_is_401_during_push(migrated):
    p = migrated.plan
    stale = {"auths": {h: {"username": p.username, "password": "revoked-token",
                           "auth": base64.b64encode(f"{p.username}:revoked-token".encode()).decode()}
                       for h in (p.internal_service, p.realm_host)}}
    migrated.operator.patch("Secret", p.push_secret, p.secrets_namespace, {"data": {
        ".dockerconfigjson": base64.b64encode(json.dumps(stale).encode()).decode()}})
    [check] = assert_diagnosed(migrated.verify("verify"), "push-401")
    assert check.name.startswith("push secret may push to ")


def test_registry_entry_trusting_only_the_registry_ca_meets_traefiks_default_cert(migrated):
    """containerd fetches the realm token with the REGISTRY host's TLS settings (a real containerd does)."""
    p = migrated.plan
    ca = migrated.sb.ca_file.read_text()
    migrated.on_node(NODE, 'printf "%s" "$CA" > /etc/rancher/k3s/lan-ca.crt', CA=ca)
    reg = migrated.registries(NODE)
    reg["configs"][p.registry_host]["tls"] = {"ca_file": "/etc/rancher/k3s/lan-ca.crt"}
    migrated.write_registries(NODE, reg, restart=True)
    failing = assert_diagnosed(migrated.verify("verify"), "traefik-default-cert", at_least=2)
    assert all(c.name.startswith(NODE + ":") for c in failing)
    assert "traefik.default, not gitea.k3s.example.test" in failing[0].cause


def test_registry_entry_without_tls_settings_is_unknown_authority(migrated):
    reg = migrated.registries(NODE)
    del reg["configs"][migrated.plan.registry_host]["tls"]
    migrated.write_registries(NODE, reg, restart=True)
    failing = assert_diagnosed(migrated.verify("verify"), "unknown-authority", at_least=2)
    assert all(c.name.startswith(NODE + ":") for c in failing)


def test_registry_entry_without_credentials_is_pull_denied(migrated):
    reg = migrated.registries(NODE)
    del reg["configs"][migrated.plan.registry_host]["auth"]
    migrated.write_registries(NODE, reg, restart=True)
    [check] = assert_diagnosed(migrated.verify("verify"), "pull-denied")
    assert check.name.startswith(f"{NODE}: containerd on the node pulls")  # the pull-test pod brings its pull secret


def test_cluster_dns_mirror_in_registries_yaml(migrated):
    reg = migrated.registries(NODE)
    reg["mirrors"] = {migrated.plan.registry_host: {"endpoint": [f"http://{migrated.plan.internal_service}"]}}
    migrated.write_registries(NODE, reg, restart=True)
    # containerd falls back to the registry itself, so pulls still work: the file is what is wrong
    [check] = assert_diagnosed(migrated.verify("registries", "restart", "verify"), "cluster-dns-on-node")
    assert check.name == f"{NODE}: registries.yaml"


def test_registries_yaml_written_but_k3s_not_restarted(migrated):
    # systemd and stat report whole seconds: write in a later second than k3s's last start
    time.sleep(1.1)  # not a wait for a state: the scenario needs the write one whole second after the start
    migrated.write_registries(NODE, migrated.registries(NODE), restart=False)
    [check] = assert_diagnosed(migrated.verify("registries", "restart", "verify"), "not-restarted")
    assert check.name == f"{NODE}: registries.yaml loaded"


def test_realm_host_unreachable_from_the_nodes(migrated):
    sb = migrated.sb
    sb.call(lambda: sb.cluster.network.down.add((C.TRAEFIK_LB_IP, sb.cluster.public_port)))
    failing = assert_diagnosed(migrated.verify("ingress", "verify"), "realm-unreachable-from-node", at_least=10)
    assert all("containerd on the node pulls" in c.name or ": pull-test pod pulls " in c.name for c in failing)


def test_gitea_root_url_over_plain_http(migrated):
    sb = migrated.sb

    def plain():
        sb.cluster.gitea.root_url = sb.cluster.gitea.root_url.replace("https://", "http://")
    sb.call(plain)
    failing = assert_diagnosed(migrated.verify("verify"), "realm-plain-http", at_least=1 + 2 + 1 + 10)
    assert "registry challenge names the plan's realm" in names(failing)


def test_nginx_literal_proxy_pass_without_resolver(migrated):
    p = migrated.plan
    conf = ("server {\n  listen 443 ssl;\n  ssl_certificate /etc/nginx/tls/tls.crt;\n"
            "  ssl_certificate_key /etc/nginx/tls/tls.key;\n"
            f"  location / {{\n    proxy_pass http://{p.internal_service};\n  }}\n}}\n")
    migrated.operator.patch("ConfigMap", p.proxy_config_configmap, p.proxy_namespace,
                           {"data": {"default.conf": conf}})
    [check] = assert_diagnosed(migrated.verify("proxy", "verify"), "nginx-upstream")
    assert check.name == "nginx resolves Gitea at request time"


def test_nginx_resolver_that_is_not_kube_dns(migrated):
    p = migrated.plan
    cm = migrated.cluster.get("ConfigMap", p.proxy_config_configmap, p.proxy_namespace)
    conf = cm["data"]["default.conf"].replace("resolver 10.43.0.10", "resolver 10.43.0.99")
    migrated.operator.patch("ConfigMap", p.proxy_config_configmap, p.proxy_namespace,
                           {"data": {"default.conf": conf}})
    migrated.restart_proxy()
    failing = assert_diagnosed(migrated.verify("verify"), "nginx-resolver")
    assert names(failing) == ["Kaniko's view: realm through the proxy"]
    proxy = dict((c.name, c) for _, c in migrated.verify("proxy"))
    assert diagnosis_of(proxy["nginx resolves Gitea at request time"]) == "nginx-resolver"


def test_ca_configmap_not_the_proxy_cert_is_the_kaniko_flags_trap(migrated):
    p = migrated.plan
    other = make_proxy_cert(p.realm_hostname, 30)
    migrated.operator.patch("ConfigMap", p.proxy_ca_configmap, p.proxy_namespace,
                           {"data": {"ca.crt": other.cert_pem.decode()}})
    [check] = assert_diagnosed(migrated.verify("verify"), "kaniko-flags")
    assert "SSL certificate problem" in check.cause


def test_expired_proxy_certificate(migrated):
    p = migrated.plan
    old = expired_cert(p.realm_hostname)
    migrated.set_proxy_cert(old.cert_pem, old.key_pem)
    migrated.restart_proxy()
    [check] = assert_diagnosed(migrated.verify("verify"), "cert-expired")
    assert "certificate has expired" in check.cause


def test_proxy_certificate_for_another_name(migrated):
    other = make_proxy_cert("someone-else.example.test", 30)
    migrated.set_proxy_cert(other.cert_pem, other.key_pem)
    migrated.restart_proxy()
    [check] = assert_diagnosed(migrated.verify("verify"), "name-mismatch")
    assert check.name == "Kaniko's view: realm through the proxy"


def test_proxy_service_without_endpoints_leaves_the_host_alias_dangling(migrated):
    p = migrated.plan
    migrated.operator.patch("Service", p.proxy_name, p.proxy_namespace,
                           {"spec": {"selector": {"app": "nothing-has-this-label"}}})
    [check] = assert_diagnosed(migrated.verify("verify"), "kaniko-host-alias")
    assert check.name == "Kaniko's view: realm through the proxy"


def test_socat_as_the_auth_proxy(migrated):
    p = migrated.plan
    migrated.operator.patch("Deployment", p.proxy_name, p.proxy_namespace, {"spec": {"template": {"spec": {
        "containers": [{"name": "nginx", "image": "alpine/socat:1.8.0.0"}]}}}})

    def socat_running() -> bool:
        pods = migrated.cluster.list("Pod", p.proxy_namespace, labels=f"app={p.proxy_name}")
        return [x["spec"]["containers"][0]["image"] for x in pods] == ["alpine/socat:1.8.0.0"] and \
            pods[0].get("status", {}).get("phase") == "Running"
    poll(socat_running, timeout=20, what="the proxy replaced by one running alpine/socat pod")
    [check] = assert_diagnosed(migrated.verify("verify"), "socat-proxy")
    assert "alpine/socat" in check.cause


# ------------------------------------------------------------------ audit stays read-only
def test_audit_without_node_probes_creates_no_pod(shared):
    before = len(shared.sb.call(lambda: shared.sb.api.requests))
    ctx = Context(plan=shared.plan, cluster=shared.cluster, token=shared.token, audit=True, node_probes=False)
    checks = [c for key in ("credentials", "ingress", "verify") for c in STAGES[key].verify(ctx)]
    reqs = shared.sb.call(lambda: list(shared.sb.api.requests))[before:]
    assert [r for r in reqs if r["method"] != "GET"] == []
    assert {c.name for c in checks if c.status == "skip"} >= {"Kaniko's view: realm through the proxy",
                                                             "containerd's view on every node"}
    # the one warning: in skip_verify mode the realm serves Traefik's default certificate, and the audit says so
    assert [c.name for c in checks if c.status == "warn"] == ["the realm's certificate can be verified"]
    assert all(c.status in ("pass", "skip", "warn") for c in checks), [(c.name, c.cause) for c in checks]


def test_a_full_audit_runs_the_operator_checks_at_once(shared):
    ctx = Context(plan=shared.plan, cluster=shared.cluster, token=shared.token, audit=True, node_probes=True)
    for key in ("credentials", "ingress", "verify"):
        STAGES[key].verify(ctx)
    [run] = ctx.cache.authflow_timing  # one concurrent run served all three stages
    assert set(run["checks_ms"]) == {"credentials", "realm", "challenge", "pull-secret", "push-secret"}
    assert run["wall_ms"] < sum(run["checks_ms"].values())
    parts = ctx.cache.verify_timing
    assert parts["wall_ms"] < sum(parts["parts_ms"].values())
