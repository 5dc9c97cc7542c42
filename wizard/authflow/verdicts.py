"""The verdicts: what a realm URL, a token's claims and an in-cluster probe's output mean — each a finding with a
catalogue key (``diagnose``) or a pass. Pure functions of text: no network."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..challenge import parse_challenges
from ..diagnose import classify
from ..plan import Plan


def token_claims(token: str) -> dict | None:
    """The payload of a JWT, unverified (only to read who it was issued to and what it grants)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def token_identity(claims: dict | None) -> tuple[bool | None, str]:
    """(anonymous?, who): Gitea's packages token carries UserID (-1 is the ghost user); others ``sub``."""
    if claims is None:
        return None, ""
    for key in ("UserID", "uid", "user_id"):
        if key in claims:
            uid = claims[key]
            return uid in (-1, 0, None), f"user id {uid}"
    if "sub" in claims:
        sub = claims.get("sub") or ""
        return sub == "" or sub.lower() in ("anonymous", "ghost"), sub or "(anonymous)"
    return None, ""


def granted(claims: dict | None, repo: str) -> set[str] | None:
    """Actions the token's ``access`` claim grants on ``repo``; None when the token does not say."""
    if not claims or not isinstance(claims.get("access"), list):
        return None
    out: set[str] = set()
    for a in claims["access"]:
        if isinstance(a, dict) and a.get("type") == "repository" and a.get("name") == repo:
            out |= set(a.get("actions") or [])
    return out



def _same_host(a, b) -> bool:
    ports = {"https": 443, "http": 80}
    return (a.hostname or "").lower() == (b.hostname or "").lower() and \
        (a.port or ports.get(a.scheme)) == (b.port or ports.get(b.scheme))


def realm_problem(realm: str, asked: str, plan_realm: str) -> tuple[str, str] | None:
    """Can a client that asked ``asked`` (a URL) use the realm its challenge named? None, or (key, cause).

    Which realm Gitea names depends on its version (research/upstream-behaviour.md): up to 1.22.0 always
    ROOT_URL + v2/token; 1.22.1-1.25 the request's Host when X-Forwarded-Proto is present (else ROOT_URL);
    from 1.26 the request's Host always, its scheme from X-Forwarded-Proto or the connection. So the plan's
    realm is right, and so is the host the client asked with the client's own scheme. A realm over plain
    HTTP for a client that asked over HTTPS sends its credentials in clear; any other host is a mismatch.
    """
    r, a, w = urlsplit(realm), urlsplit(asked), urlsplit(plan_realm)
    if _same_host(r, a) and r.scheme == a.scheme:
        return None  # derived from the request (Gitea >= 1.22.1)
    if r.scheme != "https":
        return "realm-plain-http", f"the registry's challenge names the realm {realm}" + (
            " (Gitea derived it from the request: the proxy in front of it said X-Forwarded-Proto: http)"
            if (r.hostname or "").lower() == (a.hostname or "").lower() else "")
    if _same_host(r, w):
        return None  # the plan's ROOT_URL
    return "realm-host-mismatch", f"the challenge's realm is on {r.netloc}, the plan's ROOT_URL says {w.netloc}"


@dataclass
class PodVerdict:
    problem: str = ""
    cause: str = ""
    realm: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def judge_kaniko(log: str, plan: Plan, *, proxy_image: str = "") -> PodVerdict:
    """Read the Kaniko-view pod's log: which trap (if any) Kaniko would fall into."""
    lines = log.splitlines()
    v2 = next((ln for ln in lines if ln.startswith("v2 ")), "")
    tok = next((ln for ln in lines if ln.startswith("token ")), "")
    curl_errors = [ln for ln in lines if ln.startswith("curl: (")]
    verdict = PodVerdict()
    if not v2 and not tok:
        last = log.strip().splitlines()[-1] if log.strip() else "no output"
        return PodVerdict("unexpected", f"the probe pod printed no result: {last[-200:]}")
    code = v2.split(" ")[1] if len(v2.split(" ")) > 1 else ""
    if code == "401":
        params = next((p for s, p in parse_challenges([v2.split(" ", 2)[2]]) if s.lower() == "bearer"), None) \
            if len(v2.split(" ", 2)) > 2 else None
        if params is None:
            verdict.problem, verdict.cause = "unexpected", "/v2/ through the internal service answered 401 without a " \
                                                          "Bearer challenge"
            return verdict
        verdict.realm = params.get("realm", "")
        problem = realm_problem(verdict.realm, f"http://{plan.internal_service}", plan.realm)
        if problem is not None:
            verdict.problem, verdict.cause = problem
            return verdict
    elif code != "":
        err = curl_errors[0] if curl_errors and code == "000" else ""
        verdict.problem = "unexpected"
        verdict.cause = (f"GET http://{plan.internal_service}/v2/ from the pod: "
                         f"{err or ('answered ' + code)} (want 401 from Gitea)")
        return verdict
    tcode = tok.split(" ")[1] if len(tok.split(" ")) > 1 else ""
    if tcode == "200":
        if "token-json yes" not in log:
            verdict.problem, verdict.cause = "unexpected", "the realm answered 200 without a token in its JSON"
        return verdict
    err = curl_errors[-1] if curl_errors else ""
    where = f"GET {plan.realm} through the proxy"
    if tcode in ("000", ""):
        if "socat" in proxy_image:
            verdict.problem, verdict.cause = "socat-proxy", f"{where}: {err or 'no answer'} (the proxy runs {proxy_image})"
            return verdict
        d = classify(err)
        if d is not None and d.key in ("cert-expired", "name-mismatch", "ip-without-san"):
            verdict.problem = d.key
        elif re.search(r"SSL certificate problem|certificate verify|unable to get local issuer|self[- ]signed", err):
            verdict.problem = "kaniko-flags"
        elif re.search(r"Could not resolve host|Failed to connect|Couldn't connect|Connection refused|timed out", err):
            verdict.problem = "kaniko-host-alias"
        else:
            verdict.problem = "unexpected"
        verdict.cause = f"{where}: {err or 'no answer'}"
        return verdict
    if tcode in ("502", "504"):
        verdict.problem, verdict.cause = "nginx-resolver", f"{where} answered {tcode}"
    elif tcode == "404":
        verdict.problem, verdict.cause = "token-endpoint-404", f"{where} answered 404"
    else:
        verdict.problem, verdict.cause = "unexpected", f"{where} answered {tcode}"
    return verdict


def judge_pull(output: str, exit_code: int | None) -> PodVerdict:
    """``k3s crictl pull IMAGE`` on a node: ok, or the catalogue entry its error names."""
    if exit_code == 0:
        return PodVerdict()
    text = output.strip()
    m = re.search(r"FATA\[\d+\] (.*)", text)
    line = m.group(1) if m else (text.splitlines()[-1] if text else "")
    if exit_code is None:
        return PodVerdict("unexpected", "the pull did not finish in time")
    d = classify(text)
    return PodVerdict(d.key if d else "unexpected", line[-300:] or f"crictl exited {exit_code}")
