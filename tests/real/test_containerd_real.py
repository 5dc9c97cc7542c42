"""Real containerd pulls through the configuration the wizard causes (issue 14 §2).

The chain under test is the product's: the registries.yaml the wizard writes for a plan
(``registries.plan_node`` on a node without a file — the Node registries stage's own code) → what K3s
generates from it, as our node model renders it (``sandbox.containerd.render``: config.toml with the CRI
registry auth, certs.d/<host>/hosts.toml) → a real containerd 1.6 started from exactly those files, pulling
the stack's seeded image through real nginx TLS with ``ctr images pull --hosts-dir certs.d --user U:P``.

For every case the model's pull meets the same real stack (``containerd.model_pull``) and both must agree:
the same outcome, the same error text (save the two wording differences of containerd 1.6, see
``as_containerd_16``), and the same diagnosis — the catalogue entry ``classify`` finds in real ctr's error is
the entry the wizard's node verdict (``authflow.judge_pull`` on the model's ``crictl pull`` output) names,
and, where this machine can see the same fault, the entry the wizard's auth-flow probe names.
"""

from __future__ import annotations

import pytest
from helpers import require_binary
from real import test_gitea_real
from real.containerd import Containerd, CtrResult, as_containerd_16, k3s_credentials, model_pull
from real.stack import NOREALM_HOST, REALM_HOST, REGISTRY_HOST, REPO, WRITER, Stack
from real.test_authflow_real import probe

from sandbox import containerd as C
from wizard import authflow
from wizard import registries as R
from wizard.credentials import Secret
from wizard.diagnose import classify
from wizard.plan import Plan

NODE = "node-1"
K3S_CONTAINERD1 = "v1.30.6+k3s1"  # a release with certs.d and containerd 1.x: the config format 1.6 reads
gitea_stack = test_gitea_real.gitea_stack  # the module-scoped real Gitea 1.26 behind nginx, seeded
REGISTRY_CRT = "/etc/rancher/k3s/registry-only.crt"  # a CA file holding the registry host's certificate alone


@pytest.fixture(scope="session")
def ctrd_binaries(real_binaries) -> dict[str, str]:
    return {"containerd": require_binary("containerd"), "ctr": require_binary("ctr"),
            "unshare": real_binaries.unshare, "nsenter": require_binary("nsenter")}


@pytest.fixture
def node(ctrd_binaries):
    """``node(generated, node_files=…, trusted_by_os=…)``: a started real containerd; stopped by PID afterwards."""
    started: list[Containerd] = []

    def make(generated: dict[str, str], **options) -> Containerd:
        c = Containerd(**ctrd_binaries, generated=generated, hosts=[REGISTRY_HOST, REALM_HOST, NOREALM_HOST],
                       **options)
        started.append(c)
        c.start()
        return c

    yield make
    for c in started:
        c.stop()
    for c in started:
        assert c.proc.poll() is not None, f"containerd (pid {c.proc.pid}) still running after stop"


# ---------------------------------------------------------------------------------- the wizard's side
def plan_for(st: Stack, node_tls: str = "skip_verify") -> Plan:
    return Plan(root_url=st.root_url, registry_host=st.registry, username=WRITER, org=REPO.split("/")[0],
                node_tls=node_tls)


def wizard_registries(st: Stack, token: str, node_tls: str = "skip_verify") -> tuple[str, dict[str, bytes]]:
    """The registries.yaml the Node registries stage writes on a node without one, and the CA bundle beside it."""
    plan = plan_for(st, node_tls)
    np = R.plan_node(NODE, None, plan, Secret(token), {})
    files = {}
    if node_tls == "ca":  # registry.ca_file (the registry host's certificate) + the realm's certificate
        files[R.CA_PATH] = R.bundle_text(st.certs[REGISTRY_HOST].cert_pem.decode(),
                                         st.certs[st.realm_host].cert_pem.decode()).encode()
    return "".join(np.chunks), files


def edited(text: str, **hosts: dict | None) -> str:
    """The wizard's file with some hosts' entries replaced (None: removed), re-rendered by the wizard."""
    data = R.parse(text)
    for host, entry in hosts.items():
        if entry is None:
            data["configs"].pop(host, None)
        else:
            data["configs"][host] = entry
    return R.render(data)


def node_verdict(result: C.PullResult) -> str:
    """What the wizard concludes from the node's ``k3s crictl pull`` (the model's output): "ok" or the key."""
    rc, out, err = C.crictl_output(result)
    v = authflow.judge_pull(out + err, rc)
    return "ok" if v.ok else v.problem


def real_verdict(res: CtrResult) -> str:
    if res.ok:
        return "ok"
    d = classify(res.stderr)
    return d.key if d else "unexpected"


def pull_both(st: Stack, node, loaded: str | None, *, node_files: dict[str, bytes] | None = None,
              trusted_by_os: list[bytes] = (), k3s_version: str = K3S_CONTAINERD1,
              ) -> tuple[CtrResult, C.PullResult, Containerd, list]:
    """Real containerd with K3s's files for ``loaded`` (None: registries.yaml never loaded), and the model.

    Also returns the token requests (method, path, user) the issuer saw during the REAL pull."""
    image = f"{st.registry}/{REPO}:latest"
    ctrd = node(C.render(loaded, k3s_version), node_files=node_files, trusted_by_os=trusted_by_os)
    assert ctrd.cri_loaded(), "the CRI plugin did not load the model's config.toml:\n" + ctrd.log_text()[-2000:]
    before = len(st.issuer.requests)
    real = ctrd.pull(image, k3s_credentials(loaded, st.registry) if loaded else None)
    seen = st.issuer.requests[before:]
    model = model_pull(image, loaded, node_files=node_files, trusted_by_os=trusted_by_os, k3s_version=k3s_version)
    return real, model, ctrd, seen


def assert_agree(real: CtrResult, model: C.PullResult) -> None:
    context = f"real ctr (exit {real.rc}): {real.error or 'ok'}\nmodel: {model.error or 'ok'}"
    assert real.ok == model.ok, "real containerd and the node model disagree — " + context
    if not real.ok:
        assert real.error == "ctr: " + as_containerd_16(model.error), context
    assert real_verdict(real) == node_verdict(model), context


def image_digest(ctrd: Containerd, image: str) -> str:
    res = ctrd.ctr("--namespace", "k8s.io", "images", "ls")
    row = next((ln.split() for ln in res.stdout.splitlines() if ln.split()[:1] == [image]), None)
    assert row, f"{image} not in ctr images ls:\n{res.stdout}"
    return row[2]


# ---------------------------------------------------------------------------------- good
@pytest.mark.parametrize("node_tls", ["skip_verify", "ca"])
def test_node_pulls_where_the_wizard_says_it_can(real_stack, node, node_tls):
    st = real_stack()
    text, files = wizard_registries(st, st.tokens[WRITER], node_tls)
    real, model, ctrd, seen = pull_both(st, node, text, node_files=files)
    assert_agree(real, model)
    assert real.ok and node_verdict(model) == "ok", real.stderr[-1500:]
    assert probe(st, WRITER, st.tokens[WRITER]).ok  # the wizard's probe from this machine agrees
    assert image_digest(ctrd, f"{st.registry}/{REPO}:latest") == model.digest
    # containerd POSTed for an OAuth token first, then fell back to Gitea's GET with the registries.yaml credentials
    assert [(m, user) for m, _, user in seen[:2]] == [("POST", ""), ("GET", WRITER)], seen
    assert all(user == WRITER for m, _, user in seen if m == "GET"), seen


# ---------------------------------------------------------------------------------- broken
def test_registries_yaml_not_loaded_is_x509_from_the_realm(real_stack, node):
    """K3s never loaded the file (no certs.d, no auth) and the registry host's certificate is publicly trusted
    (Caddy's): the realm's self-signed certificate is what fails, on the anonymous token request."""
    st = real_stack()
    real, model, _, _ = pull_both(st, node, None, trusted_by_os=[st.certs[REGISTRY_HOST].cert_pem])
    assert_agree(real, model)
    assert f'Get "https://{REALM_HOST}:{st.port}/v2/token?' in real.error and "x509:" in real.error, real.error
    assert real_verdict(real) == "unknown-authority"


def test_registries_yaml_not_loaded_nothing_trusted_is_x509_from_the_registry(real_stack, node):
    st = real_stack()
    real, model, _, _ = pull_both(st, node, None)
    assert_agree(real, model)
    assert f'Head "https://{st.registry}/v2/{REPO}/manifests/latest": x509:' in real.error, real.error
    assert real_verdict(real) == "unknown-authority"


def test_realm_without_tls_route_is_404_on_the_token_endpoint(real_stack, node):
    st = real_stack(realm_host=NOREALM_HOST)  # nginx answers 404 there, as Traefik without the TLS Ingress
    text, files = wizard_registries(st, st.tokens[WRITER])
    real, model, _, _ = pull_both(st, node, text, node_files=files)
    assert_agree(real, model)
    flow = probe(st, WRITER, st.tokens[WRITER])
    assert real_verdict(real) == node_verdict(model) == flow.problem == "token-endpoint-404", real.error


def test_wrong_token_is_401(real_stack, node):
    st = real_stack()
    text, files = wizard_registries(st, "not-the-token")
    real, model, _, _ = pull_both(st, node, text, node_files=files)
    assert_agree(real, model)
    flow = probe(st, WRITER, "not-the-token")
    assert real_verdict(real) == node_verdict(model) == flow.problem == "wrong-token", real.error


@pytest.mark.parametrize("node_tls", ["skip_verify", "ca"])
def test_the_broken_k3s_releases_hosts_toml_is_ignored_and_the_pull_fails_x509(real_stack, node, node_tls):
    """k3s v1.29.3's hosts.toml (no [host] table), as the model writes it: real containerd ignores the file, so
    the registry host's TLS settings are lost and the pull fails x509 — the model's pull says the same."""
    st = real_stack()
    text, files = wizard_registries(st, st.tokens[WRITER], node_tls)
    real, model, _, _ = pull_both(st, node, text, node_files=files, k3s_version="v1.29.3+k3s1")
    assert_agree(real, model)
    assert not real.ok and "x509: certificate signed by unknown authority" in real.error, real.error
    # the same file with the [host] table (the fixed release) pulls
    fixed, _, _, _ = pull_both(st, node, text, node_files=files, k3s_version="v1.29.4+k3s1")
    assert fixed.ok, fixed.stderr[-1500:]


# ---------------------------------------------------------------------------------- the design rule
def test_realm_token_uses_the_registry_hosts_tls_not_the_realm_hosts(real_stack, node):
    """The realm host's own entry skips verification, the registry host's trusts only its own certificate:
    containerd checks the realm with the REGISTRY host's settings, so the token request fails on x509."""
    st = real_stack()
    text, _ = wizard_registries(st, st.tokens[WRITER])
    entry = R.parse(text)["configs"][st.registry]
    loaded = edited(text, **{st.registry: {**entry, "tls": {"ca_file": REGISTRY_CRT}},
                             f"{st.realm_host}:{st.port}": {**entry, "tls": {"insecure_skip_verify": True}}})
    files = {REGISTRY_CRT: st.certs[REGISTRY_HOST].cert_pem}
    real, model, _, _ = pull_both(st, node, loaded, node_files=files)
    assert_agree(real, model)
    assert f'failed to fetch oauth token: Post "https://{REALM_HOST}:{st.port}/v2/token": x509:' in real.error, \
        real.error
    assert real_verdict(real) == "unknown-authority"


def test_realm_hosts_own_entry_is_never_read(real_stack, node):
    """skip_verify on the registry host alone pulls, while the realm host's entry names a CA file that does not
    exist — containerd never opens it for the realm fetch."""
    st = real_stack()
    text, _ = wizard_registries(st, st.tokens[WRITER])
    entry = R.parse(text)["configs"][f"{REALM_HOST}:{st.port}"]
    loaded = edited(text, **{f"{REALM_HOST}:{st.port}": {**entry, "tls": {"ca_file": "/etc/rancher/k3s/none.crt"}}})
    real, model, _, _ = pull_both(st, node, loaded)
    assert_agree(real, model)
    assert real.ok, real.stderr[-1500:]


def test_credentials_are_looked_up_under_the_registry_host(real_stack, node):
    """Credentials only on the realm host's entry: containerd asks the realm anonymously and the pull is denied."""
    st = real_stack()
    text, _ = wizard_registries(st, st.tokens[WRITER])
    entry = R.parse(text)["configs"][st.registry]
    loaded = edited(text, **{st.registry: {"tls": entry["tls"]}})
    real, model, _, seen = pull_both(st, node, loaded)
    assert_agree(real, model)
    assert not real.ok and seen and all(user == "" for _, _, user in seen), seen


# ---------------------------------------------------------------------------------- real Gitea
@pytest.mark.parametrize("token,verdict", [(None, "ok"), ("not-the-token", "wrong-token")], ids=["good", "wrong"])
def test_real_gitea_node_pull(gitea_stack, node, token, verdict):
    """Gitea 1.26 names the registry host itself as the realm (nginx passes Host and X-Forwarded-Proto)."""
    st = gitea_stack
    text, files = wizard_registries(st, token or st.tokens[WRITER])
    real, model, _, _ = pull_both(st, node, text, node_files=files)
    assert_agree(real, model)
    assert real_verdict(real) == verdict, real.error
