"""curl and wget inside simulated pods: what they send, whom they trust, what they print."""

from __future__ import annotations

import asyncio
import base64

import pytest

from sandbox.curl import make_curl, make_wget
from sandbox.http import Headers, HttpRequest, HttpResponse, NetError, TLSConfig
from sandbox.memfs import MemFS
from sandbox.shell import ShellContext, run_script

ROOTS = b"-----BEGIN CERTIFICATE-----\nSYSTEM ROOTS\n-----END CERTIFICATE-----\n"
CHALLENGE = 'Bearer realm="https://gitea.k3s.bto.bar/v2/token",service="container_registry",scope="*"'
UNAUTHORIZED = HttpResponse(
    401,
    Headers([("Content-Type", "application/json"), ("Www-Authenticate", CHALLENGE)]),
    b'{"errors":[{"code":"UNAUTHORIZED"}]}\n',
)


class FakeNet:
    """A fetch function that answers from a table by URL and records every call."""

    def __init__(self, answers: dict[str, HttpResponse | NetError], delay: float = 0.0):
        self.answers = answers
        self.delay = delay
        self.calls: list[tuple[HttpRequest, TLSConfig, dict, float]] = []

    async def __call__(self, request, tls, resolve, timeout):
        self.calls.append((request, tls, resolve, timeout))
        if self.delay:
            await asyncio.sleep(self.delay)
        answer = self.answers.get(request.url, HttpResponse.text(404, "404 page not found\n"))
        if isinstance(answer, NetError):
            raise answer
        return answer

    @property
    def request(self) -> HttpRequest:
        return self.calls[-1][0]

    @property
    def tls(self) -> TLSConfig:
        return self.calls[-1][1]


@pytest.fixture
def net() -> FakeNet:
    return FakeNet(
        {
            "https://registry.bto.bar/v2/": UNAUTHORIZED,
            "https://gitea.k3s.bto.bar/v2/token?service=container_registry": HttpResponse.text(
                200, '{"token":"abc"}', content_type="application/json"
            ),
            "http://gitea-http.gitea.svc:3000/": HttpResponse.text(
                200, "<html>gitea</html>", content_type="text/html"
            ),
            "http://old.test/": HttpResponse(302, Headers([("Location", "/new")])),
            "http://old.test/new": HttpResponse.text(200, "moved here"),
            "http://loop.test/": HttpResponse(301, Headers([("Location", "http://loop.test/")])),
        }
    )


@pytest.fixture
def ctx(net) -> ShellContext:
    fs = MemFS(clock=lambda: 0.0)
    fs.mkdir("/tmp")
    fs.mkdir("/etc/ssl/certs", parents=True)
    return ShellContext(
        fs=fs,
        hostname="probe",
        env={"HOME": "/root"},
        commands={"curl": make_curl(net, ROOTS), "wget": make_wget(net, ROOTS)},
    )


async def sh(ctx: ShellContext, script: str):
    return await run_script(script, ctx)


# -- requests ------------------------------------------------------------------------------------


async def test_plain_get_prints_the_body_and_sends_curls_default_headers(ctx, net):
    result = await sh(ctx, "curl http://gitea-http.gitea.svc:3000/")
    assert (result.rc, result.stdout, result.stderr) == (0, "<html>gitea</html>", "")
    req = net.request
    assert req.method == "GET"
    assert req.headers.items == [
        ("Host", "gitea-http.gitea.svc:3000"),
        ("User-Agent", "curl/8.5.0"),
        ("Accept", "*/*"),
    ]


async def test_user_sends_basic_auth_and_k_skips_verification(ctx, net):
    ctx.env.update(GITEA_USERNAME="registry-user", GITEA_TOKEN="t0k")
    result = await sh(ctx, 'curl -sk -u "$GITEA_USERNAME:$GITEA_TOKEN" "https://registry.bto.bar/v2/"')
    assert result.rc == 0
    assert result.stdout == '{"errors":[{"code":"UNAUTHORIZED"}]}\n'
    expected = "Basic " + base64.b64encode(b"registry-user:t0k").decode()
    assert net.request.headers.get("Authorization") == expected
    assert net.tls == TLSConfig(verify=False)


async def test_write_out_and_output_file(ctx, net):
    result = await sh(
        ctx,
        "curl -sk -o /tmp/body -w '%{http_code} %{content_type} %{url_effective} %{exitcode}\\n' "
        "https://registry.bto.bar/v2/",
    )
    assert result.stdout == "401 application/json https://registry.bto.bar/v2/ 0\n"
    assert ctx.fs.read("/tmp/body") == UNAUTHORIZED.body
    result = await sh(ctx, "curl -sko /dev/null -w '%{http_code}' https://registry.bto.bar/v2/")
    assert result.stdout == "401"


async def test_head_prints_headers_that_grep_can_find(ctx, net):
    result = await sh(ctx, 'curl -sk -I "https://registry.bto.bar/v2/" | grep -i www-authenticate')
    assert result.rc == 0
    assert result.stdout == f"Www-Authenticate: {CHALLENGE}\r\n"
    assert net.request.method == "HEAD"


async def test_include_puts_the_status_line_and_headers_before_the_body(ctx):
    result = await sh(ctx, "curl -si http://gitea-http.gitea.svc:3000/")
    assert result.stdout == ("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>gitea</html>")


async def test_method_data_and_custom_headers(ctx, net):
    await sh(
        ctx, "curl -s -X PUT -H 'Accept: application/json' -H 'X-Trace: 1' -d a=1 -d b=2 http://api.test/x"
    )
    req = net.request
    assert (req.method, req.url, req.body) == ("PUT", "http://api.test/x", b"a=1&b=2")
    assert req.headers.items == [
        ("Host", "api.test"),
        ("User-Agent", "curl/8.5.0"),
        ("Accept", "application/json"),
        ("X-Trace", "1"),
        ("Content-Length", "7"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ]
    await sh(ctx, "curl -s -d x=1 -A probe/1 http://api.test")
    assert (net.request.method, net.request.url) == ("POST", "http://api.test/")
    assert net.request.headers.get("User-Agent") == "probe/1"


async def test_resolve_and_timeouts_reach_the_network(ctx, net):
    await sh(
        ctx,
        "curl -s --resolve registry.bto.bar:443:10.0.0.7 --connect-timeout 3 https://registry.bto.bar/v2/",
    )
    _, _, resolve, timeout = net.calls[-1]
    assert resolve == {("registry.bto.bar", 443): "10.0.0.7"}
    assert timeout == 3.0
    await sh(ctx, "curl -s -m 7 https://registry.bto.bar/v2/")
    assert net.calls[-1][3] == 7.0


# -- trust -------------------------------------------------------------------------------------------


async def test_trust_prefers_cacert_then_ssl_cert_file_then_bundle_then_system_roots(ctx, net):
    fs = ctx.fs
    fs.write("/tmp/ca.pem", b"CACERT")
    fs.write("/tmp/env.pem", b"ENVFILE")
    fs.write("/etc/ssl/certs/ca-certificates.crt", b"BUNDLE")
    url = "https://registry.bto.bar/v2/"

    await sh(ctx, f"SSL_CERT_FILE=/tmp/env.pem curl -s --cacert /tmp/ca.pem {url}")
    assert net.tls == TLSConfig(verify=True, ca_pems=(b"CACERT",), system_roots=False)
    await sh(ctx, f"SSL_CERT_FILE=/tmp/env.pem curl -s {url}")
    assert net.tls.ca_pems == (b"ENVFILE",)
    await sh(ctx, f"SSL_CERT_FILE=/tmp/missing.pem curl -s {url}")
    assert net.tls.ca_pems == (b"BUNDLE",)
    fs.remove("/etc/ssl/certs/ca-certificates.crt")
    await sh(ctx, f"curl -s {url}")
    assert net.tls == TLSConfig(verify=True, ca_pems=(ROOTS,), system_roots=False)


async def test_missing_cacert_file_is_error_77(ctx, net):
    result = await sh(ctx, "curl -sS --cacert /tmp/nope.pem https://registry.bto.bar/v2/")
    assert (result.rc, result.stderr) == (77, "curl: (77) error setting certificate file: /tmp/nope.pem\n")
    assert net.calls == []


# -- failures ---------------------------------------------------------------------------------------


async def test_fail_turns_http_errors_into_22(ctx):
    result = await sh(ctx, "curl -fsS http://gitea-http.gitea.svc:3000/missing")
    assert (result.rc, result.stdout) == (22, "")
    assert result.stderr == "curl: (22) The requested URL returned error: 404\n"
    quiet = await sh(ctx, "curl -fs http://gitea-http.gitea.svc:3000/missing; echo rc=$?")
    assert (quiet.stdout, quiet.stderr) == ("rc=22\n", "")
    plain = await sh(ctx, "curl -s http://gitea-http.gitea.svc:3000/missing")
    assert (plain.rc, plain.stdout) == (0, "404 page not found\n")


@pytest.mark.parametrize(
    ("flags", "shown"),
    [("", True), ("-s", False), ("-sS", True)],
)
async def test_network_errors_use_curls_code_and_message(ctx, net, flags, shown):
    net.answers["https://gitea.test/"] = NetError(
        "dial tcp: lookup gitea.test: no such host", kind="dns", curl_code=6,
        curl_message="Could not resolve host: gitea.test",
    )  # fmt: skip
    result = await sh(ctx, f"curl {flags} -w '%{{http_code}}' https://gitea.test/")
    assert result.rc == 6
    assert result.stdout == "000"
    assert result.stderr == ("curl: (6) Could not resolve host: gitea.test\n" if shown else "")


async def test_tls_failure_message(ctx, net):
    net.answers["https://registry.bto.bar/v2/"] = NetError(
        "tls: failed to verify certificate: x509: certificate signed by unknown authority", kind="tls",
        curl_code=60, curl_message="SSL certificate problem: self-signed certificate",
    )  # fmt: skip
    result = await sh(ctx, "curl -sS https://registry.bto.bar/v2/")
    assert (result.rc, result.stderr) == (60, "curl: (60) SSL certificate problem: self-signed certificate\n")


async def test_max_time_expires_with_28(ctx):
    slow = FakeNet({}, delay=5)
    ctx.commands["curl"] = make_curl(slow, ROOTS)
    result = await sh(ctx, "curl -sS -m 0.05 http://slow.test/")
    assert (result.rc, result.stderr) == (
        28,
        "curl: (28) Operation timed out after 50 milliseconds with 0 bytes received\n",
    )


async def test_unknown_option_and_missing_url(ctx):
    result = await sh(ctx, "curl --frobnicate http://x.test/")
    assert result.rc == 2
    assert result.stderr.startswith("curl: option --frobnicate: is unknown\n")
    assert (await sh(ctx, "curl -s")).rc == 2


# -- redirects and verbose ----------------------------------------------------------------------------


async def test_location_follows_redirects_up_to_a_limit(ctx, net):
    result = await sh(ctx, "curl -sL -w ' %{url_effective}' http://old.test/")
    assert result.stdout == "moved here http://old.test/new"
    assert (await sh(ctx, "curl -s http://old.test/")).stdout == ""
    looped = await sh(ctx, "curl -sSL http://loop.test/")
    assert (looped.rc, looped.stderr) == (47, "curl: (47) Maximum (5) redirects followed\n")


async def test_verbose_shows_connection_request_and_response(ctx):
    result = await sh(
        ctx, "curl -skv --resolve registry.bto.bar:443:10.43.0.9 https://registry.bto.bar/v2/ 2>&1 >/dev/null"
    )
    lines = result.stdout.replace("\r\n", "\n").splitlines()
    assert "* Connected to registry.bto.bar (10.43.0.9) port 443" in lines
    assert lines[lines.index("> GET /v2/ HTTP/1.1") + 1] == "> Host: registry.bto.bar"
    assert "> User-Agent: curl/8.5.0" in lines
    assert "< HTTP/1.1 401 Unauthorized" in lines
    assert f"< Www-Authenticate: {CHALLENGE}" in lines


# -- wget ---------------------------------------------------------------------------------------------


async def test_wget_to_stdout_and_to_a_file(ctx, net):
    result = await sh(ctx, "wget -q -O - http://gitea-http.gitea.svc:3000/")
    assert (result.rc, result.stdout, result.stderr) == (0, "<html>gitea</html>", "")
    assert net.request.headers.get("User-Agent") == "Wget"
    result = await sh(ctx, "wget -q -O /tmp/page http://gitea-http.gitea.svc:3000/ && cat /tmp/page")
    assert result.stdout == "<html>gitea</html>"


async def test_wget_server_error_is_8(ctx):
    result = await sh(ctx, "wget -q -O - http://gitea-http.gitea.svc:3000/missing")
    assert (result.rc, result.stderr) == (8, "wget: server returned error: HTTP/1.1 404 Not Found\n")


async def test_wget_options_reach_the_network(ctx, net):
    result = await sh(
        ctx,
        "wget -qS --no-check-certificate --header 'Authorization: Bearer x' -T 5 -O- https://registry.bto.bar/v2/",
    )
    assert result.rc == 8
    assert f"  Www-Authenticate: {CHALLENGE}\n" in result.stderr
    req, tls, _, timeout = net.calls[-1]
    assert (req.headers.get("Authorization"), tls.verify, timeout) == ("Bearer x", False, 5.0)
    await sh(ctx, "wget -q -O- https://registry.bto.bar/v2/")
    assert net.tls.verify is True


async def test_wget_network_error(ctx, net):
    net.answers["http://down.test/"] = NetError(
        "dial tcp 10.0.0.1:80: connect: connection refused", kind="refused"
    )
    result = await sh(ctx, "wget -q -O - http://down.test/")
    assert (result.rc, result.stderr) == (
        4,
        "wget: can't connect to remote host (down.test): Connection refused\n",
    )
