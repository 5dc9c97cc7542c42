"""`ghcr2gitea sandbox --gitea real`: the world's gitea pods forward to a real Gitea process, and the whole
migration runs against it — the realm, the tokens, the uploads and the pulls are real Gitea's."""

from __future__ import annotations

import http.client
import json
import socket
import ssl

import pytest
from helpers import require_components, run_cli, sandbox_state

from sandbox import cluster as C
from sandbox.gitea import parse_version


@pytest.fixture
def real_gitea_sandbox(make_sandbox):
    require_components("gitea")
    sb = make_sandbox(servers=1, agents=1, gitea_real=True)
    yield sb
    proc = sb.cluster.gitea.real.proc
    sb.stop()
    assert proc is None or proc.poll() is not None, "the real Gitea outlived its sandbox"


def through_the_registry_host(sb, path: str) -> tuple[int, bytes]:
    """GET https://<registry host>PATH as this machine does: Caddy → Traefik web → the gitea pod → real Gitea.

    The connection goes to the world's loopback port with the registry host as SNI and certificate name, so
    the .test name never reaches DNS.
    """
    ctx = ssl.create_default_context(cafile=str(sb.ca_file))
    tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", sb.opts.public_port), timeout=10),
                          server_hostname=C.REGISTRY_HOST)
    conn = http.client.HTTPConnection(C.REGISTRY_HOST)
    conn.sock = tls  # given a socket, http.client never resolves or connects itself
    try:
        conn.request("GET", path, headers={"Host": sb.cluster.host(C.REGISTRY_HOST)})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@pytest.mark.parametrize("world_api", ["sandbox", "real"], indirect=True)  # real: real Gitea and a real API server
def test_apply_and_audit_pass_against_a_real_gitea(world_api, real_gitea_sandbox):
    sb = real_gitea_sandbox
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    audit = run_cli(sb, "audit", "--plan", str(sb.plan), "--format", "json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    state = sandbox_state(sb)["registries"]
    for image in C.GUIDE_IMAGES:  # what real Gitea holds is byte-identical to the sandbox's GHCR
        key = f"{C.ORG}/{image}:latest"
        assert state["gitea"][key] == state["ghcr"][key], key
    assert sb.token_file.read_text().strip() == sb.cluster.gitea.real.users[C.USERNAME].token


def test_the_registry_host_answers_with_the_real_gitea_version(real_gitea_sandbox):
    status, body = through_the_registry_host(real_gitea_sandbox, "/api/v1/version")
    assert status == 200, body
    assert parse_version(json.loads(body)["version"]) >= (1, 26, 0)
