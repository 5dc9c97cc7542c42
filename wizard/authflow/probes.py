"""The probes: walking the token flow from this machine (Probe, walk and the named checks, run at once under
one event loop), and the scripts the in-cluster vantages run (a Kaniko-like pod, containerd on a node)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from .. import tlsinfo
from ..challenge import MANIFEST_TYPES, bearer_challenge, parse_challenges
from ..credentials import Secret
from ..diagnose import classify
from ..netclient import async_client, error_text, is_tls_error, mapping_of, tls_error_text
from ..plan import Plan
from ..script import Script
from .flow import KEEP_HEADERS, SERVICE, Flow, Hop
from .verdicts import granted, realm_problem, token_claims, token_identity


def _basic(user: str, secret: Secret) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret.reveal()}".encode()).decode()


def _with_query(url: str, params: list[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    q = "&".join(x for x in (parts.query, urlencode(params)) if x)
    return urlunsplit(parts._replace(query=q))


def _status_text(resp: httpx.Response) -> str:
    return f"{resp.status_code} {resp.reason_phrase}".strip()


# ------------------------------------------------------------------------------------ the probe
class Probe:
    """HTTP(S) from the operator's machine: --resolve mappings, the plan's CA file, TLS facts per endpoint.

    Use as ``async with Probe(...) as probe``; hops of any number of flows may run concurrently.
    """

    def __init__(self, *, resolve=(), ca_file: str | None = None, timeout: float = 10.0):
        self.mapping = mapping_of(resolve)
        self.ca_file = ca_file
        self.timeout = timeout
        self._tls: dict[tuple[str, int], asyncio.Task] = {}
        self.t0 = time.perf_counter()
        self.verified: httpx.AsyncClient | None = None
        self.unverified: httpx.AsyncClient | None = None

    @classmethod
    def for_plan(cls, plan: Plan, *, timeout: float = 10.0) -> Probe:
        return cls(resolve=plan.resolve, ca_file=plan.registry_ca_file, timeout=timeout)

    async def __aenter__(self) -> Probe:
        self.t0 = time.perf_counter()
        self.verified = async_client(self.mapping, ca_file=self.ca_file, timeout=self.timeout)
        self.unverified = async_client(self.mapping, verify=False, timeout=self.timeout)
        return self

    async def __aexit__(self, *exc) -> None:
        for t in self._tls.values():
            if not t.done():
                t.cancel()
        await self.verified.aclose()
        await self.unverified.aclose()

    def tls(self, url: str) -> asyncio.Task | None:
        """The endpoint's TLS report, inspected once per probe (concurrently with the first hop to it)."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            return None
        key = (parts.hostname.lower(), parts.port or 443)
        if key not in self._tls:
            self._tls[key] = asyncio.ensure_future(tlsinfo.inspect(key[0], key[1], mapping=self.mapping,
                                                                   ca_file=self.ca_file, timeout=self.timeout))
        return self._tls[key]

    async def hop(self, flow: Flow, step: str, method: str, url: str, *, headers: dict | None = None,
                  verify: bool = True) -> httpx.Response | None:
        """One request; its evidence goes into ``flow``. None when there was no HTTP answer."""
        tls_task = self.tls(url)
        t0 = time.perf_counter()
        at = (t0 - self.t0) * 1000
        client = self.verified if verify else self.unverified
        resp, err, exc = None, "", None
        try:
            resp = await client.request(method, url, headers=headers or {})
        except httpx.HTTPError as e:
            exc = e
        ms = (time.perf_counter() - t0) * 1000
        report = await tls_task if tls_task is not None else None
        tls_line = cert_line = ""
        if report is not None:
            flow.tls[f"{report.host}:{report.port}"] = report.to_dict()
            tls_line = report.trusted_by
            cert_line = f"{report.leaf.describe()}; {tls_line}" if report.leaf else tls_line
            for w in report.warnings():
                if f"{report.host}: {w}" not in flow.notes:
                    flow.notes.append(f"{report.host}: {w}")
        if exc is not None:
            if is_tls_error(exc):
                go = report.go_error(verify=verify) if report is not None else None
                err = go or tls_error_text(exc)
            else:
                err = error_text(exc)
            flow.hops.append(Hop(step, method, url, None, ms, at, error=err, tls=tls_line, cert=cert_line))
            return None
        kept: dict = {}
        for k, v in resp.headers.multi_items():
            if k.lower() in KEEP_HEADERS:
                kept.setdefault(k.lower(), []).append(v)
        kept = {k: v[0] if len(v) == 1 else v for k, v in kept.items()}
        flow.hops.append(Hop(step, method, url, resp.status_code, ms, at, kept, tls=tls_line, cert=cert_line))
        return resp

    def transport_problem(self, flow: Flow, url: str, *, verify: bool, unreachable: str) -> tuple[str, str]:
        """The catalogue key and cause of the last hop's transport failure."""
        hop = flow.hops[-1]
        parts = urlsplit(url)
        task = self._tls.get(((parts.hostname or "").lower(), parts.port or 443))
        report = task.result() if task is not None and task.done() and not task.cancelled() else None
        if report is not None and verify and report.go_error() and not report.error:
            return report.problem_key() or "unknown-authority", f"{hop.method} {url}: {report.go_error()}"
        d = classify(hop.error)
        if d is not None and d.key in ("cert-expired", "ip-without-san", "name-mismatch", "unknown-authority",
                                       "traefik-default-cert"):
            return d.key, f"{hop.method} {url}: {hop.error}"
        return unreachable, f"{hop.method} {url}: {hop.error}"


def _proxy_failure(resp: httpx.Response) -> bool:
    """A gateway error from nginx: the auth proxy could not resolve or reach its upstream."""
    return resp.status_code in (502, 504) and "nginx" in (resp.headers.get("server") or "").lower()


# ------------------------------------------------------------------------------------ the walk
async def walk(probe: Probe, name: str, *, registry: str, repo: str, user: str = "", secret: Secret | None = None,
               actions: tuple[str, ...] = ("pull",), reference: str | None = None, expect_realm: str | None = None,
               verify_realm: bool = True, token_fallback: bool = False,
               rejected_key: str = "wrong-token") -> Flow:
    """The whole Docker v2 token flow against ``registry`` (host[:port]) for ``repo``.

    ``actions`` decides the scope asked for; with "push" an upload is started and cancelled.
    ``reference`` HEADs that manifest. ``expect_realm`` (a URL) is what ROOT_URL says the realm
    is. ``verify_realm`` False: the realm's certificate is reported but not required (nodes
    skip verification in the guide's setup). ``token_fallback``: when the realm cannot be used
    (before the TLS Ingress exists), ask the registry host's own /v2/token (Gitea serves it on
    every host). ``rejected_key`` is the catalogue key for credentials the realm refuses.
    """
    flow = Flow(name)
    t0 = time.perf_counter()
    try:
        await _walk(probe, flow, registry=registry, repo=repo, user=user, secret=secret, actions=actions,
                    reference=reference, expect_realm=expect_realm, verify_realm=verify_realm,
                    token_fallback=token_fallback, rejected_key=rejected_key)
    finally:
        flow.ms = (time.perf_counter() - t0) * 1000
    return flow


async def _walk(probe: Probe, flow: Flow, *, registry, repo, user, secret, actions, reference, expect_realm,
                verify_realm, token_fallback, rejected_key) -> None:
    base = f"https://{registry}"
    r = await probe.hop(flow, "registry /v2/ (anonymous)", "GET", f"{base}/v2/")
    if r is None:
        flow.fail(*probe.transport_problem(flow, f"{base}/v2/", verify=True, unreachable="registry-unreachable"))
        return
    if _proxy_failure(r):
        flow.fail("nginx-resolver", f"GET {base}/v2/ answered {_status_text(r)} from nginx")
        return
    auth_header: dict[str, str] = {}
    bearer = bearer_challenge(r)
    if r.status_code == 200:
        flow.notes.append("the registry answered /v2/ without authentication")
    elif r.status_code != 401:
        flow.fail("unexpected", f"GET {base}/v2/ answered {_status_text(r)} (want 401 with a Bearer challenge)")
        return
    elif bearer is None:
        schemes = [s for s, _ in parse_challenges(r.headers.get_list("www-authenticate"))]
        if "basic" in (s.lower() for s in schemes) and secret is not None:
            flow.notes.append("the registry asks for Basic auth only: no token realm")
            auth_header = {"Authorization": _basic(user, secret)}
        else:
            flow.fail("unexpected", f"GET {base}/v2/ answered 401 without a Bearer challenge ({schemes or 'none'})")
            return
    if bearer is not None:
        token = await _token(probe, flow, bearer, base=base, repo=repo, user=user, secret=secret,
                             actions=actions, expect_realm=expect_realm, verify_realm=verify_realm,
                             token_fallback=token_fallback, rejected_key=rejected_key)
        if token is None:
            return
        auth_header = {"Authorization": f"Bearer {token}"}
    if auth_header:
        r = await probe.hop(flow, "registry /v2/ with the token", "GET", f"{base}/v2/", headers=auth_header)
        if r is None:
            flow.fail(*probe.transport_problem(flow, f"{base}/v2/", verify=True, unreachable="registry-unreachable"))
            return
        if r.status_code == 401 and bearer is not None:
            flow.fail("token-rejected", f"GET {base}/v2/ answered 401 to the token the realm issued")
            return
        if r.status_code == 401:
            flow.token_ok = False
            flow.fail(rejected_key, f"GET {base}/v2/ answered 401 to {user}'s credentials")
            return
        if r.status_code != 200:
            flow.fail("unexpected", f"GET {base}/v2/ with the token answered {_status_text(r)}")
            return
    if reference:
        url = f"{base}/v2/{repo}/manifests/{reference}"
        r = await probe.hop(flow, "HEAD the manifest (pull)", "HEAD", url,
                            headers={**auth_header, "Accept": MANIFEST_TYPES})
        if r is None:
            flow.fail(*probe.transport_problem(flow, url, verify=True, unreachable="registry-unreachable"))
            return
        if r.status_code == 200:
            flow.pull_ok = True
        elif r.status_code == 404:
            flow.notes.append(f"{repo}:{reference} is not in the registry (yet)")
        elif r.status_code in (401, 403):
            flow.pull_ok = False
            if flow.identity == "(anonymous)":
                flow.fail("anonymous-token", f"HEAD {url} answered {_status_text(r)} to the anonymous token")
            else:
                flow.fail("pull-denied", f"HEAD {url} answered {_status_text(r)}")
            return
        else:
            flow.fail("unexpected", f"HEAD {url} answered {_status_text(r)}")
            return
    if "push" in actions:
        await _push(probe, flow, base=base, repo=repo, user=user, auth_header=auth_header)


async def _token(probe: Probe, flow: Flow, bearer: dict[str, str], *, base, repo, user, secret, actions,
                 expect_realm, verify_realm, token_fallback, rejected_key) -> str | None:
    """Ask the realm for a token; every trap on the way is a finding. None when there is no usable token."""
    realm = bearer.get("realm", "")
    flow.realm, flow.service = realm, bearer.get("service", "")
    flow.scope = f"repository:{repo}:{','.join(actions)}"
    parts = urlsplit(realm)
    if not realm:
        flow.fail("unexpected", "the Bearer challenge names no realm")
        return None
    realm_bad = realm_problem(realm, base, expect_realm) if expect_realm else \
        ("realm-plain-http", f"the registry's challenge names the realm {realm}") if parts.scheme != "https" else None
    if realm_bad is not None:
        flow.fail(*realm_bad)
    params = [("scope", flow.scope)] + ([("service", flow.service)] if flow.service else [])
    if secret is not None:
        params = [("account", user), *params]
    if realm_bad is not None and realm_bad[0] == "realm-plain-http" and secret is not None and \
            urlsplit(base).scheme == "https":
        # never send the credentials in clear: ask the registry host's own /v2/token over HTTPS, or stop
        flow.notes.append(f"the credentials were not sent to {realm}: it is plain HTTP")
        if token_fallback:
            return await _fallback_token(probe, flow, base=base, params=params, user=user, secret=secret,
                                         why=realm_bad[1], rejected_key=rejected_key)
        return None
    url = _with_query(realm, params)
    headers = {"Authorization": _basic(user, secret)} if secret is not None else {}
    verify = verify_realm and parts.scheme == "https"
    calls = [probe.hop(flow, "realm: token with the credentials" if secret is not None else "realm: token "
                       "(anonymous)", "GET", url, headers=headers, verify=verify)]
    if secret is not None:
        # what the guide's own check does (no -u): a 200 here proves nothing about the credentials
        calls.append(probe.hop(flow, "realm: token without credentials", "GET",
                               _with_query(realm, [("scope", flow.scope), ("service", flow.service)]),
                               verify=verify))
    results = await asyncio.gather(*calls)
    r, anon = results[0], (results[1] if len(results) > 1 else None)
    if anon is not None and anon.status_code == 200:
        flow.notes.append("the realm hands out anonymous tokens: a 200 from it without credentials (the guide's "
                          "curl) proves nothing")
    problem = None
    if r is None:
        problem = probe.transport_problem(flow, url, verify=verify, unreachable="realm-unreachable")
    elif r.status_code == 404:
        problem = ("token-endpoint-404", f"GET {realm} answered {_status_text(r)}")
    elif _proxy_failure(r):
        problem = ("nginx-resolver", f"GET {realm} answered {_status_text(r)} from nginx")
    elif r.status_code in (401, 403) and secret is not None:
        flow.token_ok = False
        flow.fail(rejected_key, f"the realm {realm} answered {_status_text(r)} to {user}'s credentials"
                  + (" (it still gives anonymous tokens, so a check without credentials would have passed)"
                     if anon is not None and anon.status_code == 200 else ""))
        return None
    elif r.status_code != 200:
        problem = ("unexpected", f"GET {realm} answered {_status_text(r)}")
    if problem is not None:
        if token_fallback and secret is not None:
            token = await _fallback_token(probe, flow, base=base, params=params, user=user, secret=secret,
                                          why=problem[1], rejected_key=rejected_key)
            if token is not None or flow.token_ok is False:  # a token, or the credentials were refused there
                return token
        flow.fail(*problem)
        return None
    return _read_token(flow, r, realm, repo=repo, actions=actions, with_credentials=secret is not None)


async def _fallback_token(probe: Probe, flow: Flow, *, base, params, user, secret, why, rejected_key) -> str | None:
    url = _with_query(f"{base}/v2/token", params)
    r = await probe.hop(flow, "registry host's own /v2/token", "GET", url, headers={"Authorization": _basic(user,
                                                                                                        secret)})
    if r is None or r.status_code == 404:
        return None
    if r.status_code in (401, 403):
        flow.token_ok = False
        flow.fail(rejected_key, f"{base}/v2/token answered {_status_text(r)} to {user}'s credentials")
        return None
    if r.status_code != 200:
        return None
    flow.notes.append(f"the realm is not usable from here yet ({why}); the token came from {base}/v2/token "
                      "(Gitea serves it on every host) — stage HTTPS ingress checks the realm itself")
    return _read_token(flow, r, f"{base}/v2/token", repo=flow.scope.split(":")[1], actions=tuple(
        flow.scope.rsplit(":", 1)[1].split(",")), with_credentials=True)


def _read_token(flow: Flow, r: httpx.Response, realm: str, *, repo: str, actions: tuple[str, ...],
                with_credentials: bool) -> str | None:
    try:
        body = r.json()
    except ValueError:
        body = {}
    token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
    if not token:
        flow.fail("unexpected", f"{realm} answered 200 without a token in its JSON")
        return None
    claims = token_claims(token)
    anonymous, who = token_identity(claims)
    flow.identity = who or None
    grants = granted(claims, repo)
    if grants is not None and "access" in (claims or {}):
        flow.notes.append(f"the token grants {sorted(grants) or 'nothing'} on {repo}")
    if with_credentials and anonymous:
        flow.identity = "(anonymous)"
        flow.token_ok = False
        flow.fail("anonymous-token", f"{realm} answered 200 to the credentials, but with an anonymous token")
        return token
    flow.token_ok = True
    return token


async def _push(probe: Probe, flow: Flow, *, base: str, repo: str, user: str, auth_header: dict) -> None:
    url = f"{base}/v2/{repo}/blobs/uploads/"
    r = await probe.hop(flow, "start an upload (push permission)", "POST", url,
                        headers={**auth_header, "Content-Length": "0"})
    if r is None:
        flow.fail(*probe.transport_problem(flow, url, verify=True, unreachable="registry-unreachable"))
        return
    if r.status_code == 202:
        flow.push_ok = True
        loc = r.headers.get("location", "")
        if loc:
            target = loc if loc.startswith(("http://", "https://")) else f"{base}{loc}"
            if not target.startswith(base + "/"):
                flow.notes.append(f"the upload's Location points at {urlsplit(target).scheme}://"
                                  f"{urlsplit(target).netloc}, not {base}: a proxy in front of the registry must "
                                  "pass Host and X-Forwarded-Proto")
            c = await probe.hop(flow, "cancel the upload", "DELETE", target, headers=auth_header)
            if c is not None and c.status_code >= 300:
                # distribution asks for delete ("*") rights on any DELETE; the upload then expires by itself
                flow.notes.append(f"the upload was not cancelled ({_status_text(c)}): the registry purges it later")
        return
    flow.push_ok = False
    if r.status_code in (401, 403):
        if flow.identity == "(anonymous)":
            flow.fail("anonymous-token", f"POST {url} answered {_status_text(r)} to the anonymous token")
        else:
            flow.fail("pull-only-token", f"{user or 'the user'}'s token may not push to {repo}: the upload answered "
                                         f"{_status_text(r)}")
        return
    if _proxy_failure(r):
        flow.fail("nginx-resolver", f"POST {url} answered {_status_text(r)} from nginx")
        return
    flow.fail("unexpected", f"POST {url} answered {_status_text(r)} (want 202)")


# ------------------------------------------------------------------------------------ the checks
def first_repo(plan: Plan) -> str:
    return plan.images[0].target_repo if plan.images else f"{plan.org}/ghcr2gitea-probe"


async def credentials_flow(probe: Probe, plan: Plan, token: Secret) -> Flow:
    """Does Gitea accept the token, and may it push? (Stage Credentials; works before the TLS Ingress.)"""
    return await walk(probe, "credentials", registry=plan.registry_host, repo=first_repo(plan), user=plan.username,
                      secret=token, actions=("pull", "push"), verify_realm=plan.node_tls == "ca",
                      token_fallback=True, expect_realm=plan.realm)


async def challenge_flow(probe: Probe, plan: Plan) -> Flow:
    """The registry's anonymous challenge names the plan's realm (ROOT_URL), over HTTPS."""
    flow = Flow("challenge")
    t0 = time.perf_counter()
    base = f"https://{plan.registry_host}"
    try:
        r = await probe.hop(flow, "registry /v2/ (anonymous)", "GET", f"{base}/v2/")
        if r is None:
            flow.fail(*probe.transport_problem(flow, f"{base}/v2/", verify=True, unreachable="registry-unreachable"))
            return flow
        if _proxy_failure(r):
            flow.fail("nginx-resolver", f"GET {base}/v2/ answered {_status_text(r)} from nginx")
            return flow
        bearer = bearer_challenge(r)
        if r.status_code != 401 or bearer is None:
            flow.fail("unexpected", f"GET {base}/v2/ answered {_status_text(r)} without a Bearer challenge")
            return flow
        flow.realm, flow.service = bearer.get("realm", ""), bearer.get("service", "")
        problem = realm_problem(flow.realm, base, plan.realm)
        if problem is not None:
            flow.fail(*problem)
        return flow
    finally:
        flow.ms = (time.perf_counter() - t0) * 1000


async def realm_flow(probe: Probe, plan: Plan, token: Secret | None) -> Flow:
    """The realm itself answers a token over HTTPS (not 404), with the credentials when given."""
    flow = Flow("realm")
    t0 = time.perf_counter()
    try:
        bearer = {"realm": plan.realm, "service": SERVICE}
        verify = plan.node_tls == "ca"
        got = await _token(probe, flow, bearer, base=f"https://{plan.registry_host}",
                           repo=first_repo(plan), user=plan.username, secret=token, actions=("pull",),
                           expect_realm=None, verify_realm=verify, token_fallback=False, rejected_key="wrong-token")
        if got is not None and token is None:
            flow.notes.append("no credentials given: the realm answered with an anonymous token, which proves the "
                              "route and the certificate, not a token")
        return flow
    finally:
        flow.ms = (time.perf_counter() - t0) * 1000


async def secret_flow(probe: Probe, plan: Plan, name: str, user: str, secret: Secret, *, push: bool) -> Flow:
    """The credentials a cluster secret holds, walked as its client would use them (Kaniko: push; pods: pull)."""
    return await walk(probe, name, registry=plan.registry_host, repo=first_repo(plan), user=user, secret=secret,
                      actions=("pull", "push") if push else ("pull",), reference="latest", expect_realm=plan.realm,
                      verify_realm=plan.node_tls == "ca", token_fallback=False,
                      rejected_key="push-401" if push else "wrong-token")


# ------------------------------------------------------------------------------------ running them
def run_sync(coro):
    """Run a coroutine to completion from synchronous code (a thread of its own if a loop is running here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def gather_flows(plan: Plan, makers: dict[str, object], *, timeout: float = 10.0,
                       ca_file: str | None = None) -> dict[str, Flow]:
    """Run the named flow makers (``lambda probe: coroutine``) at once under one probe (``ca_file``: trust that
    file instead of the plan's registry.ca_file)."""
    probe = Probe(resolve=plan.resolve, ca_file=ca_file, timeout=timeout) if ca_file else Probe.for_plan(
        plan, timeout=timeout)
    async with probe:
        names = list(makers)
        flows = await asyncio.gather(*(makers[n](probe) for n in names))
    return dict(zip(names, flows, strict=True))


def secret_credentials(cluster, plan: Plan) -> dict[str, tuple[str, Secret] | None]:
    """(user, token) that the push secret holds for the internal service (what Kaniko sends) and the pull
    secret for the registry host (what pods send). Read-only; the values stay masked Secrets."""
    from ..stages.registry_secrets import read_auths
    out: dict[str, tuple[str, Secret] | None] = {}
    for key, name, host in (("push-secret", plan.push_secret, plan.internal_service),
                            ("pull-secret", plan.pull_secret, plan.registry_host)):
        auths = read_auths(cluster.get("Secret", name, plan.secrets_namespace))
        entry = auths.get(host) or {}
        user, password = entry.get("username"), entry.get("password")
        if (not user or not password) and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError:
                user, password = None, None
        out[key] = (user, Secret(password)) if user and password else None
    return out


ALL_FLOWS = ("credentials", "realm", "challenge", "pull-secret", "push-secret")


@contextlib.contextmanager
def node_trust(ctx):
    """With registry.node_tls: ca, a private temp file holding the nodes' CA bundle (registry.ca_file and the
    realm's certificate), so the operator's checks verify the realm as the nodes will; else None (the plan's
    registry.ca_file is used)."""
    if ctx.plan.node_tls != "ca":
        yield None
        return
    from ..stages.base import StageFailed
    from ..stages.nodes import ca_bundle
    try:
        text = ca_bundle(ctx)
    except StageFailed:  # no realm certificate yet: the registry's CA alone
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="ghcr2gitea-ca-") as d:
        path = os.path.join(d, "nodes-ca.crt")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(text)
        yield path


def operator_flows(ctx, *names: str) -> dict[str, Flow | None]:
    """The operator-machine checks a stage needs, run concurrently.

    In an audit the first stage to ask runs every check of every stage at once (a full audit then
    waits for the slowest check, not the sum) and later stages read the results; during apply each
    stage probes afresh, after its own changes. A check without what it needs (no token, no
    secret) is None.
    """
    plan: Plan = ctx.plan
    cache: dict = ctx.cache.authflow if ctx.audit else {}
    want = [n for n in (ALL_FLOWS if ctx.audit else names) if n not in cache]
    if want:
        creds = secret_credentials(ctx.cluster, plan) if {"pull-secret", "push-secret"} & set(want) else {}
        makers: dict = {}
        for n in want:
            if n == "credentials" and ctx.token is not None:
                makers[n] = lambda probe: credentials_flow(probe, plan, ctx.token)
            elif n == "realm":
                makers[n] = lambda probe: realm_flow(probe, plan, ctx.token)
            elif n == "challenge":
                makers[n] = lambda probe: challenge_flow(probe, plan)
            elif n in ("pull-secret", "push-secret") and creds.get(n):
                user, secret = creds[n]
                makers[n] = (lambda probe, n=n, user=user, secret=secret:
                             secret_flow(probe, plan, n, user, secret, push=n == "push-secret"))
        t0 = time.perf_counter()
        with node_trust(ctx) as ca_file:
            flows = run_sync(gather_flows(plan, makers, ca_file=ca_file)) if makers else {}
        wall = (time.perf_counter() - t0) * 1000
        ctx.cache.authflow_timing.append({"wall_ms": wall, "checks_ms": {n: f.ms for n, f in flows.items()}})
        for n in want:
            cache[n] = flows.get(n)
    return {n: cache.get(n) for n in names}


# ------------------------------------------------------------------------------------ in-cluster vantages
CA_BUNDLE = "/certs/ca-certificates.crt"


def kaniko_script(plan: Plan) -> str:
    """What the Kaniko-view pod runs: /v2/ through the internal service, the token through the proxy.

    curl only; one line per request (``v2 CODE CHALLENGE``, ``token CODE``, ``token-json yes|no``) and
    curl's own error line on failure, so the log can be judged like a hop. The token lands in a
    private file (umask 077).
    """
    # the realm exactly as the challenge names it (ROOT_URL's port too: the proxy Service listens there)
    realm = plan.realm + "?" + urlencode(
        {"scope": f"repository:{first_repo(plan)}:pull,push", "service": SERVICE})
    s = Script()
    s.add("curl -sS -o /dev/null -w {fmt} {url}", fmt="v2 %{http_code} %header{www-authenticate}\\n",
          url=f"http://{plan.internal_service}/v2/")
    s.add("curl -sS -o /tmp/token.json -w {fmt} {url}", fmt="token %{http_code}\\n", url=realm)
    s.add("grep -q {pattern} /tmp/token.json && echo 'token-json yes' || echo 'token-json no'", pattern='"token"')
    return s.text()


def ca_bundle_script() -> str:
    """The init container that merges the proxy's CA into the system bundle SSL_CERT_FILE names (Kaniko's too).

    The bundle holds only public certificates and the main container may run as another user: 0644.
    """
    s = Script(strict=True)
    s.add("cat /etc/ssl/certs/ca-certificates.crt /custom-ca/ca.crt > {bundle}", bundle=CA_BUNDLE)
    s.add("chmod 644 {bundle}", bundle=CA_BUNDLE)
    return s.text()


def pull_script(image: str) -> str:
    """containerd's own pull on a node, with the registries.yaml it has loaded."""
    return Script().add("k3s crictl pull {image}", image=image).text()

