"""Walking the Docker v2 token flow hop by hop, with evidence, from the operator's machine.

GET /v2/ → parse every Www-Authenticate challenge (several headers; Bearer and Basic; Gitea's
``scope="*"`` and distribution's none) → realm URL, service, scope → GET realm?service&scope
with Basic credentials → token (``token`` or ``access_token``) → retry /v2/ with Bearer →
optionally HEAD a manifest → for push, start an upload and cancel it (the guide's "401 during
push", caught before CI is).

Every hop records its URL, status, the headers that matter, its timing and, for HTTPS, what
the endpoint presented (``tlsinfo``). Every check is a coroutine; the checks a stage (or a
whole audit) needs run at once under one event loop, so their wall time is the slowest
check's, not the sum. The traps the guide and the issue name are findings with a catalogue
key (``diagnose``): the realm on another host than ROOT_URL, the realm over plain HTTP, a 404
from the realm (the missing TLS Ingress), an anonymous token handed out for wrong
credentials, a token that may pull but not push.

Three modules, one concern each:

- ``flow``: the model — ``Hop`` and ``Flow``, the evidence and the finding of one walk;
- ``probes``: the walking — ``Probe`` (HTTP with ``--resolve`` mapping and TLS facts), ``walk`` and the named
  checks, running them at once (``operator_flows``), and the scripts of the in-cluster vantages;
- ``verdicts``: what a realm URL, a token's claims and an in-cluster probe's output mean (no network).

This package's namespace is the API the stages and tests use (``authflow.operator_flows``, …).
"""

from __future__ import annotations

from ..challenge import MANIFEST_TYPES, parse_challenges
from .flow import KEEP_HEADERS, SERVICE, Flow, Hop
from .probes import (
    ALL_FLOWS,
    CA_BUNDLE,
    Probe,
    ca_bundle_script,
    challenge_flow,
    credentials_flow,
    first_repo,
    gather_flows,
    kaniko_script,
    node_trust,
    operator_flows,
    pull_script,
    realm_flow,
    run_sync,
    secret_credentials,
    secret_flow,
    walk,
)
from .verdicts import (
    PodVerdict,
    granted,
    judge_kaniko,
    judge_pull,
    realm_problem,
    token_claims,
    token_identity,
)

__all__ = ["ALL_FLOWS", "CA_BUNDLE", "KEEP_HEADERS", "MANIFEST_TYPES", "SERVICE", "Flow", "Hop", "PodVerdict",
           "Probe", "ca_bundle_script", "challenge_flow", "credentials_flow", "first_repo", "gather_flows", "granted",
           "judge_kaniko", "judge_pull", "kaniko_script", "node_trust", "operator_flows", "parse_challenges",
           "pull_script", "realm_flow", "realm_problem", "run_sync", "secret_credentials", "secret_flow",
           "token_claims", "token_identity", "walk"]
