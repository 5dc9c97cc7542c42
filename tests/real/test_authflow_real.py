"""The wizard's auth-flow probe against real parts, and its verdict against real skopeo's.

For every scenario the probe (wizard/authflow/probes.py, from "this machine") and skopeo (a real
client of the whole flow) meet the same registry, realm and certificates. They must agree:
both succeed, or both fail — and skopeo's error text must be recognised by the diagnosis
catalogue as the very entry the probe reported.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest
from real.stack import NOREALM_HOST, READER, REGISTRY_HOST, REPO, WRITER, Stack

from wizard import authflow
from wizard.credentials import Secret
from wizard.diagnose import classify


def probe(st: Stack, user: str, password: str, *, push: bool = False, trust: bool = True,
          registry: str | None = None) -> authflow.Flow:
    """The wizard's walk from this machine: --resolve mapping, the stack's CA bundle (when trusted)."""
    async def run():
        async with authflow.Probe(resolve=st.resolve(), ca_file=str(st.ca_bundle) if trust else None,
                                  timeout=10) as p:
            return await authflow.walk(p, "real", registry=registry or st.registry, repo=REPO, user=user,
                                       secret=Secret(password), actions=("pull", "push") if push else ("pull",),
                                       reference="latest", expect_realm=st.root_url + "v2/token")
    return asyncio.run(run())


@dataclass
class Scenario:
    name: str
    verdict: str  # "ok" or the catalogue key
    stack: dict
    user: str = WRITER
    password: str | None = None  # None: the user's real token
    push: bool = False
    trust: bool = True
    break_after_start: str = ""
    ip_url: bool = False


SCENARIOS = [
    Scenario("good credentials", "ok", {}),
    Scenario("good credentials pushing", "ok", {}, push=True),
    Scenario("wrong password", "wrong-token", {}, password="not-the-token"),
    Scenario("read-only user pushing", "pull-only-token", {}, user=READER, push=True),
    Scenario("untrusted CA", "unknown-authority", {}, trust=False),
    Scenario("wrong SAN on the realm", "name-mismatch", {"realm_cert_name": "wrong.test"}),
    Scenario("realm 404 (no TLS route)", "token-endpoint-404", {"realm_host": NOREALM_HOST}),
    Scenario("resolver down", "nginx-resolver", {}, break_after_start="dnsmasq"),
    Scenario("expired realm certificate", "cert-expired", {"realm_cert_expired": True}),
    Scenario("IP URL without an IP SAN", "ip-without-san", {}, ip_url=True),
    Scenario("anonymous token for a wrong password (Gitea < 1.17)", "anonymous-token",
             {"anonymous_on_bad_credentials": True}, password="not-the-token"),
]


def wait_for_502(st: Stack) -> None:
    """nginx caches the last answer for `valid=1s`; wait until it asks the (dead) resolver again."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        flow = probe(st, WRITER, st.tokens[WRITER])
        if flow.problem == "nginx-resolver":
            return
        time.sleep(0.3)
    raise AssertionError("nginx kept answering after its resolver went down")


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_probe_verdict_agrees_with_skopeo(real_stack, sc: Scenario):
    st = real_stack(**sc.stack)
    if sc.break_after_start == "dnsmasq":
        st.stop_dnsmasq()
        wait_for_502(st)
    password = st.tokens[sc.user] if sc.password is None else sc.password
    registry = f"127.0.0.1:{st.port}" if sc.ip_url else None
    flow = probe(st, sc.user, password, push=sc.push, trust=sc.trust, registry=registry)
    if sc.push:
        sk = st.skopeo("copy", "--dest-creds", f"{sc.user}:{password}", "--dest-cert-dir",
                       "{certs}", f"oci:{st.dir / 'layout'}:latest",
                       f"docker://{registry or st.registry}/{REPO}:pushed", trust=sc.trust)
    else:
        sk = st.skopeo("inspect", "--creds", f"{sc.user}:{password}", "--cert-dir", "{certs}",
                       f"docker://{registry or st.registry}/{REPO}:latest", trust=sc.trust)
    context = f"probe: {flow.verdict} ({flow.cause}); skopeo exit {sk.rc}: {sk.stderr.strip()[-400:]}"
    assert flow.verdict == sc.verdict, context
    assert sk.ok == flow.ok, "the probe and skopeo disagree — " + context
    if not flow.ok:
        d = classify(sk.stderr)
        assert d is not None and d.key == flow.problem, f"skopeo's error is diagnosed as " \
                                                          f"{d.key if d else None}, the probe said {flow.problem}: {context}"


def test_good_walk_reports_every_hop_and_the_tls_of_each_host(real_stack):
    st = real_stack()
    flow = probe(st, WRITER, st.tokens[WRITER], push=True)
    assert flow.ok, flow.cause
    ev = flow.evidence()
    steps = [h["step"] for h in ev["hops"]]
    assert steps[0] == "registry /v2/ (anonymous)"
    assert {"realm: token with the credentials", "realm: token without credentials", "registry /v2/ with the token",
            "HEAD the manifest (pull)", "start an upload (push permission)", "cancel the upload"} <= set(steps)
    first = ev["hops"][0]
    assert first["status"] == 401 and "Bearer realm=" in first["headers"]["www-authenticate"]
    assert all(h["ms"] >= 0 and "at_ms" in h for h in ev["hops"])
    upload = next(h for h in ev["hops"] if h["step"] == "start an upload (push permission)")
    assert upload["status"] == 202 and upload["headers"]["location"].startswith(f"https://{st.registry}/")
    cancel = next(h for h in ev["hops"] if h["step"] == "cancel the upload")
    # distribution wants delete ("*") rights for any DELETE: the upload is left to expire, and the probe says so
    assert cancel["status"] == 401 and any("upload was not cancelled" in n for n in flow.notes)
    assert flow.realm == st.realm and flow.service == "container_registry"
    assert flow.identity == WRITER and flow.token_ok and flow.pull_ok and flow.push_ok
    # TLS of both hosts: the chain, and which trust makes it verify
    for host in (st.registry, f"auth.test:{st.port}"):
        tls = ev["tls"][host]
        leaf = tls["chain"][0]
        assert leaf["sans"] == [host.split(":")[0]] and leaf["self_signed"] is True
        assert leaf["not_after"] and leaf["issuer"] == leaf["subject"]
        assert tls["verdict"] == "verifies against the given CA file"
        assert tls["system_roots"]["ok"] is False and tls["ca_file"] == {"ok": True}
    assert any("anonymous tokens" in n for n in flow.notes)  # the issuer gives them; the probe says so
    assert any("grants ['pull', 'push']" in n for n in flow.notes)
    # skopeo copy pushed through the same path: nginx passed Host and X-Forwarded-Proto
    assert "could not be resolved" not in st.nginx_error_log()


def test_tls_report_names_the_problem_in_go_words(real_stack):
    st = real_stack(realm_cert_name="wrong.test", seed=False)
    flow = probe(st, WRITER, st.tokens[WRITER])
    realm_tls = flow.evidence()["tls"][f"auth.test:{st.port}"]
    assert realm_tls["problems"] == ["x509: certificate is valid for wrong.test, not auth.test"]
    assert realm_tls["verdict"] == "verifies only with verification off"
    hop = next(h for h in flow.hops if h.step == "realm: token with the credentials")
    assert hop.status is None and hop.error == "x509: certificate is valid for wrong.test, not auth.test"


def test_all_checks_run_concurrently(real_stack):
    """Five walks at once: every flow's first hop starts before any flow's first hop ends."""
    st = real_stack()

    async def run():
        async with authflow.Probe(resolve=st.resolve(), ca_file=str(st.ca_bundle)) as p:
            t0 = time.perf_counter()
            flows = await asyncio.gather(*(authflow.walk(p, f"w{i}", registry=st.registry, repo=REPO, user=WRITER,
                                                         secret=Secret(st.tokens[WRITER]), reference="latest",
                                                         actions=("pull", "push"))
                                           for i in range(5)))
            return flows, (time.perf_counter() - t0) * 1000
    flows, wall = asyncio.run(run())
    assert all(f.ok for f in flows), [f.cause for f in flows]
    starts = [f.hops[0].at for f in flows]
    ends = [f.hops[0].at + f.hops[0].ms for f in flows]
    assert max(starts) < min(ends), f"first hops did not overlap: starts {starts}, ends {ends}"
    assert wall < sum(f.ms for f in flows) * 0.8, f"wall {wall:.0f} ms vs sum {sum(f.ms for f in flows):.0f} ms"


def test_no_test_name_reaches_the_system_resolver(real_stack):
    st = real_stack(seed=False)
    flow = probe(st, WRITER, st.tokens[WRITER], registry=f"{REGISTRY_HOST}:{st.port + 1 if st.port < 65535 else 1}")
    assert flow.problem == "registry-unreachable"
    assert "no --resolve mapping" in flow.hops[0].error and flow.hops[0].ms < 1000
