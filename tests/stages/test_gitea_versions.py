"""The realm by Gitea version, end to end on the sandbox (the model's rule is held to a real Gitea 1.26.0 in
tests/real/test_gitea_real.py).

Up to 1.22.0 the realm is ROOT_URL and the guide's migration works. From 1.22.1 Gitea derives it from the
request: behind the guide's Caddy → Traefik ``web`` path, Traefik overwrites ``X-Forwarded-Proto`` with
``http``, so this machine is told to fetch tokens from ``http://<registry host>/v2/token`` — credentials in
clear. The wizard must stop at the first stage that sees it, naming the plain-HTTP realm and the fixes,
before it writes anything.
"""

from __future__ import annotations

import pytest
from helpers import mutating_requests, run_cli


def test_gitea_1_22_0_migrates(make_sandbox):
    sb = make_sandbox(servers=1, agents=1, gitea_version="1.22.0")
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("version", ["1.22.1", "1.26.0"])
def test_a_plain_http_realm_stops_the_run_before_anything_is_written(make_sandbox, version):
    sb = make_sandbox(servers=1, agents=1, gitea_version=version)
    before = mutating_requests(sb)
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "realm" in out and "http://registry." in out, out
    assert "X-Forwarded-Proto" in out or "trustedIPs" in out, out  # the cause and the fix, in the run's words
    written = [m for m in mutating_requests(sb)[len(before):] if "/secrets" in m or "/pods" in m]
    assert not written, written
