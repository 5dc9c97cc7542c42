"""Walking the Docker v2 token flow from the operator's machine, hop by hop, with evidence.

GET /v2/ → parse every Www-Authenticate challenge → GET realm?service&scope with Basic →
token → GET /v2/ with Bearer → optionally HEAD a manifest, and for push, start an upload
and cancel it (catches the guide's "401 during push" before CI does).
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httpx

from .credentials import Secret
from .netclient import client, is_tls_error, peer_cert, tls_error_text
from .plan import Plan


@dataclass(frozen=True)
class Hop:
    step: str
    method: str
    url: str
    status: int | None
    ms: float
    headers: dict = field(default_factory=dict)
    error: str = ""
    cert: str = ""

    def to_dict(self) -> dict:
        return {"step": self.step, "request": f"{self.method} {self.url}", "status": self.status,
                "ms": round(self.ms, 1), "headers": self.headers, "error": self.error, "cert": self.cert}


@dataclass
class Flow:
    hops: list[Hop] = field(default_factory=list)
    realm: str = ""
    service: str = ""
    token_ok: bool = False
    push_ok: bool | None = None
    problem: str = ""  # diagnosis key
    cause: str = ""

    def evidence(self) -> dict:
        return {"hops": [h.to_dict() for h in self.hops]}


_CHALLENGE = re.compile(r'(\w+)="([^"]*)"|(\w+)=([^,\s]+)')


def parse_challenges(values: list[str]) -> list[tuple[str, dict[str, str]]]:
    """Every challenge of every Www-Authenticate header: [("Bearer", {realm, service, scope}), ("Basic", {...})]."""
    out = []
    for value in values:
        for part in re.split(r",\s*(?=(?:Bearer|Basic)\s)", value):
            scheme, _, rest = part.strip().partition(" ")
            params = {}
            for m in _CHALLENGE.finditer(rest):
                k = m.group(1) or m.group(3)
                params[k.lower()] = m.group(2) if m.group(1) else m.group(4)
            out.append((scheme, params))
    return out


def _basic(user: str, token: Secret) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token.reveal()}".encode()).decode()


class Prober:
    """HTTP from the operator's machine, honouring the plan's --resolve mappings and CA file."""

    def __init__(self, plan: Plan, *, timeout: float = 10.0):
        self.plan = plan
        self.verified = client(plan.resolve, ca_file=plan.registry_ca_file, timeout=timeout)
        self.unverified = client(plan.resolve, verify=False, timeout=timeout)

    def close(self) -> None:
        self.verified.close()
        self.unverified.close()

    def hop(self, flow: Flow, step: str, method: str, url: str, *, headers: dict | None = None,
            verify: bool = True, keep: tuple[str, ...] = ("www-authenticate", "location",
                                                          "docker-distribution-api-version", "content-type")
            ) -> httpx.Response | None:
        t0 = time.perf_counter()
        c = self.verified if verify else self.unverified
        try:
            resp = c.request(method, url, headers=headers or {})
        except httpx.HTTPError as e:
            err = tls_error_text(e) if is_tls_error(e) else str(e) or type(e).__name__
            flow.hops.append(Hop(step, method, url, None, (time.perf_counter() - t0) * 1000, error=err))
            return None
        cert = peer_cert(resp)
        kept = {k: v for k, v in resp.headers.multi_items() if k.lower() in keep}
        flow.hops.append(Hop(step, method, url, resp.status_code, (time.perf_counter() - t0) * 1000, kept,
                             cert=cert.describe() if cert else ""))
        return resp


def token_check(plan: Plan, token: Secret, prober: Prober, *, via: str = "registry") -> Flow:
    """Does Gitea accept the token? Basic on /v2/, then a push-scoped token and an upload started and cancelled.

    ``via="registry"`` asks the token endpoint on the registry host (works before the realm's
    TLS Ingress exists); ``via="realm"`` walks the real challenge → realm path.
    """
    flow = Flow()
    reg = f"https://{plan.registry_host}"
    repo = plan.images[0].target_repo if plan.images else f"{plan.org}/ghcr2gitea-probe"
    r = prober.hop(flow, "registry /v2/ with credentials", "GET", f"{reg}/v2/",
                   headers={"Authorization": _basic(plan.username, token)})
    if r is None:
        flow.problem, flow.cause = "unreachable", f"{reg}/v2/: {flow.hops[-1].error}"
        return flow
    if r.status_code == 401:
        flow.problem = "wrong-token"
        flow.cause = f"Gitea answered 401 to {plan.username}'s token on {reg}/v2/"
        return flow
    if r.status_code != 200:
        flow.problem, flow.cause = "unexpected", f"{reg}/v2/ answered {r.status_code}"
        return flow
    base = f"{reg}/v2/token" if via == "registry" else plan.realm
    q = urlencode({"service": "container_registry", "scope": f"repository:{repo}:pull,push"})
    r = prober.hop(flow, "token (push scope)", "GET", f"{base}?{q}",
                   headers={"Authorization": _basic(plan.username, token)}, verify=via == "registry")
    if r is None or r.status_code != 200:
        status = "no answer" if r is None else r.status_code
        flow.problem = "wrong-token" if r is not None and r.status_code == 401 else "token-endpoint-404" \
            if r is not None and r.status_code == 404 else "unexpected"
        flow.cause = f"token endpoint {base} answered {status}"
        return flow
    try:
        body = r.json()
    except ValueError:
        body = {}
    bearer = body.get("token") or body.get("access_token")
    if not bearer:
        flow.problem, flow.cause = "unexpected", "token endpoint answered 200 without a token"
        return flow
    flow.token_ok = True
    r = prober.hop(flow, "start an upload (push permission)", "POST", f"{reg}/v2/{repo}/blobs/uploads/",
                   headers={"Authorization": f"Bearer {bearer}"})
    if r is not None and r.status_code == 202:
        flow.push_ok = True
        loc = r.headers.get("location", "")
        if loc:
            url = loc if loc.startswith("http") else f"{reg}{loc}"
            prober.hop(flow, "cancel the upload", "DELETE", url, headers={"Authorization": f"Bearer {bearer}"})
    else:
        flow.push_ok = False
        flow.problem = "push-401"
        flow.cause = (f"{plan.username}'s token may pull but not push to {repo}: the upload answered "
                      f"{'no answer' if r is None else r.status_code}")
    return flow


def challenge_check(plan: Plan, prober: Prober) -> Flow:
    """The registry's challenge names the realm the plan expects (ROOT_URL), over HTTPS."""
    flow = Flow()
    r = prober.hop(flow, "registry /v2/ anonymous", "GET", f"https://{plan.registry_host}/v2/")
    if r is None:
        flow.problem, flow.cause = "unreachable", flow.hops[-1].error
        return flow
    bearer = [p for s, p in parse_challenges(r.headers.get_list("www-authenticate")) if s.lower() == "bearer"]
    if r.status_code != 401 or not bearer:
        flow.problem, flow.cause = "unexpected", f"/v2/ answered {r.status_code} without a Bearer challenge"
        return flow
    flow.realm, flow.service = bearer[0].get("realm", ""), bearer[0].get("service", "")
    realm = urlsplit(flow.realm)
    if realm.scheme != "https":
        flow.problem, flow.cause = "realm-plain-http", f"the realm is {flow.realm}"
    elif realm.netloc != plan.realm_host:
        flow.problem = "realm-host-mismatch"
        flow.cause = f"the realm is on {realm.netloc}, the plan's ROOT_URL says {plan.realm_host}"
    return flow


def realm_check(plan: Plan, token: Secret | None, prober: Prober) -> Flow:
    """The realm answers a token over HTTPS (not 404), with credentials when given."""
    flow = Flow()
    headers = {"Authorization": _basic(plan.username, token)} if token else {}
    q = urlencode({"service": "container_registry", "scope": f"repository:{plan.images[0].target_repo}:pull"})
    r = prober.hop(flow, "realm token over HTTPS", "GET", f"{plan.realm}?{q}", headers=headers, verify=False)
    if r is None:
        flow.problem, flow.cause = "realm-unreachable-from-node", flow.hops[-1].error
    elif r.status_code == 404:
        flow.problem, flow.cause = "token-endpoint-404", f"{plan.realm} answered 404 over HTTPS"
    elif r.status_code == 401:
        flow.problem, flow.cause = "wrong-token", f"{plan.realm} answered 401"
    elif r.status_code != 200:
        flow.problem, flow.cause = "unexpected", f"{plan.realm} answered {r.status_code}"
    else:
        try:
            flow.token_ok = bool(r.json().get("token") or r.json().get("access_token"))
        except ValueError:
            flow.token_ok = False
        if not flow.token_ok:
            flow.problem, flow.cause = "unexpected", f"{plan.realm} answered 200 but no token JSON"
    return flow
