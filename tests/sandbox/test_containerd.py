"""K3s's generated containerd files and a node's pull, against the behaviour of a real containerd.

The fake network checks certificates the way Go would for the TLSConfig it is handed, so the
tests can assert which TLS settings and credentials the realm request actually carried.
"""

import base64
import tomllib
from urllib.parse import parse_qs

import pytest
import yaml
from helpers import GUIDE_HOSTS, guide_registries

from sandbox.containerd import (
    CONTAINERD_DIR,
    PullResult,
    RegistriesError,
    crictl_output,
    kubelet_message,
    parse_image,
    parse_registries,
    pull,
    render,
)
from sandbox.gitea import Gitea, GiteaUser
from sandbox.http import HttpResponse, NetError

A = "registry.example.test"  # image host (Caddy, self-signed)
B = "gitea.k3s.example.test"  # realm host from ROOT_URL (Traefik's default certificate)
IMAGE = f"{A}/jaybrto/gwa-webhook:latest"
PREFIX = f'failed to resolve reference "{IMAGE}": '
CAS = {A: b"A-CA", B: b"B-CA"}
CERT_NAMES = {A: A, B: "a.traefik.default"}
FILES = {"/etc/ssl/a.crt": b"A-CA", "/etc/ssl/ab.crt": b"A-CA\nB-CA"}
AUTH = {"username": "registry-user", "password": "tok-push"}
X509_B = "tls: failed to verify certificate: x509: certificate is valid for a.traefik.default, not " + B


class Net:
    """Routes by host; refuses unverified-by-TLSConfig HTTPS like Go's crypto/tls."""

    def __init__(self, gitea):
        self.routes = {A: gitea.handle, B: gitea.handle}
        self.calls = []

    async def fetch(self, req, tls):
        self.calls.append((req, tls))
        handler = self.routes.get(req.host)
        if handler is None:
            raise NetError(f"dial tcp: lookup {req.host}: no such host", kind="dns")
        if req.scheme == "https" and tls.verify and not any(CAS[req.host] in pem for pem in tls.ca_pems):
            name = CERT_NAMES[req.host]
            raise NetError(
                "tls: failed to verify certificate: x509: "
                + (
                    f"certificate is valid for {name}, not {req.host}"
                    if name != req.host
                    else "certificate signed by unknown authority"
                ),
                kind="tls",
            )
        return await handler(req)

    def realm_calls(self):
        return [(req, tls) for req, tls in self.calls if req.host == B]


@pytest.fixture
def gitea():
    g = Gitea(f"https://{B}/", [GiteaUser("registry-user", "tok-push", can_push={"jaybrto"})])
    g.add_image("jaybrto/gwa-webhook", "latest")
    return g


@pytest.fixture
def net(gitea):
    return Net(gitea)


def registries(**hosts) -> str:
    """registries.yaml with configs for a=A and b=B."""
    names = {"a": A, "b": B}
    return yaml.safe_dump({"configs": {names[k]: v for k, v in hosts.items()}})


async def do_pull(net, text, image=IMAGE, **kw):
    return await pull(image, text, net.fetch, read_file=FILES.get, **kw)


def basic_of(req):
    return base64.b64decode(req.headers.get("Authorization").split()[1]).decode()


# ---- the realm request uses the registry host's TLS and credentials ----------------------------
async def test_skip_verify_on_registry_host_covers_the_realm(net, gitea):
    res = await do_pull(net, registries(a={"tls": {"insecure_skip_verify": True}, "auth": AUTH}))
    assert res.ok and res.digest == gitea.has_manifest("jaybrto/gwa-webhook", "latest")
    (post, post_tls), (get, get_tls) = net.realm_calls()
    assert post.method == "POST" and post.url == f"https://{B}/v2/token"
    form = {k: v[0] for k, v in parse_qs(post.body.decode()).items()}
    assert form == {
        "grant_type": "password",
        "username": "registry-user",
        "password": "tok-push",
        "client_id": "containerd-client",
        "service": "container_registry",
        "scope": "repository:jaybrto/gwa-webhook:pull",
    }
    assert get.method == "GET" and basic_of(get) == "registry-user:tok-push"
    assert not post_tls.verify and not get_tls.verify


async def test_ca_only_on_registry_host_fails_at_the_realm(net):
    res = await do_pull(net, registries(a={"tls": {"ca_file": "/etc/ssl/a.crt"}, "auth": AUTH}))
    assert (
        res.error
        == PREFIX + f'failed to authorize: failed to fetch oauth token: Post "https://{B}/v2/token": {X509_B}'
    )
    ((_, tls),) = net.realm_calls()
    assert tls.verify and tls.ca_pems == (b"A-CA",) and tls.system_roots


async def test_realm_host_entry_changes_nothing(net):
    b_entry = {"tls": {"insecure_skip_verify": True}, "auth": {"username": "someone", "password": "else"}}
    res = await do_pull(net, registries(a={"tls": {"ca_file": "/etc/ssl/a.crt"}, "auth": AUTH}, b=b_entry))
    assert (
        res.error
        == PREFIX + f'failed to authorize: failed to fetch oauth token: Post "https://{B}/v2/token": {X509_B}'
    )
    net.calls.clear()
    res = await do_pull(net, registries(a={"tls": {"insecure_skip_verify": True}, "auth": AUTH}, b=b_entry))
    assert res.ok
    assert basic_of(net.realm_calls()[-1][0]) == "registry-user:tok-push"  # A's credentials, not B's


async def test_ca_bundle_trusting_both_hosts(net):
    res = await do_pull(net, registries(a={"tls": {"ca_file": "/etc/ssl/ab.crt"}, "auth": AUTH}))
    assert res.ok
    assert all(tls.ca_pems == (b"A-CA\nB-CA",) for _, tls in net.realm_calls())


async def test_no_tls_settings_fail_at_the_registry(net):
    res = await do_pull(net, registries(a={"auth": AUTH}))
    assert res.error == PREFIX + (
        f'failed to do request: Head "https://{A}/v2/jaybrto/gwa-webhook/manifests/latest": '
        "tls: failed to verify certificate: x509: certificate signed by unknown authority"
    )


async def test_plain_http_registry_still_verifies_the_realm(net):
    text = yaml.safe_dump({"mirrors": {A: {"endpoint": [f"http://{A}"]}}, "configs": {A: {"auth": AUTH}}})
    res = await do_pull(net, text)
    assert (
        res.error
        == PREFIX + f'failed to authorize: failed to fetch oauth token: Post "https://{B}/v2/token": {X509_B}'
    )
    assert net.calls[0][0].url.startswith(f"http://{A}/v2/")


# ---- credentials and tokens -----------------------------------------------------------------
async def test_wrong_password(net):
    res = await do_pull(
        net,
        registries(
            a={
                "tls": {"insecure_skip_verify": True},
                "auth": {"username": "registry-user", "password": "old"},
            }
        ),
    )
    assert (
        res.error
        == PREFIX + "failed to authorize: failed to fetch oauth token: unexpected status from GET request to "
        f"https://{B}/v2/token?scope=repository%3Ajaybrto%2Fgwa-webhook%3Apull&service=container_registry: "
        "401 Unauthorized"
    )


async def test_anonymous_token_cannot_pull(net):
    res = await do_pull(net, registries(a={"tls": {"insecure_skip_verify": True}}))
    assert res.error == PREFIX + (
        "pull access denied, repository does not exist or may require authorization: "
        "server message: insufficient_scope: authorization failed"
    )
    ((get, _),) = net.realm_calls()
    assert get.method == "GET" and get.headers.get("Authorization") is None


async def test_no_credentials_with_signin_required(net, gitea):
    gitea.require_signin = True
    res = await do_pull(net, registries(a={"tls": {"insecure_skip_verify": True}}))
    assert (
        res.error
        == PREFIX
        + "failed to authorize: failed to fetch anonymous token: unexpected status from GET request to "
        f"https://{B}/v2/token?scope=repository%3Ajaybrto%2Fgwa-webhook%3Apull&service=container_registry: "
        "401 Unauthorized"
    )


async def test_missing_token_route(net):
    async def traefik_without_tls_ingress(req):
        return HttpResponse.text(404, "404 page not found\n")

    net.routes[B] = traefik_without_tls_ingress
    res = await do_pull(net, registries(a={"tls": {"insecure_skip_verify": True}, "auth": AUTH}))
    assert res.error == PREFIX + (
        "failed to authorize: failed to fetch oauth token: unexpected status from GET request to "
        f"https://{B}/v2/token?scope=repository%3Ajaybrto%2Fgwa-webhook%3Apull&service=container_registry: 404 Not Found"
    )


async def test_token_endpoint_501_breaks_the_pull(net):
    async def not_implemented(req):
        return HttpResponse.text(501, "not implemented")

    net.routes[B] = not_implemented
    res = await do_pull(net, registries(a={"tls": {"insecure_skip_verify": True}, "auth": AUTH}))
    assert not res.ok and "501" in res.error
    assert [r.method for r, _ in net.realm_calls()] == ["POST"]  # no fallback to GET


async def test_pull_secret_replaces_registries_auth(net):
    text = registries(
        a={"tls": {"insecure_skip_verify": True}, "auth": {"username": "registry-user", "password": "old"}}
    )
    res = await do_pull(net, text, pull_secret_auths={A: ("registry-user", "tok-push")})
    assert res.ok and basic_of(net.realm_calls()[-1][0]) == "registry-user:tok-push"


async def test_several_challenges(net, gitea):
    async def older_gitea(req):  # older Gitea adds a Basic challenge after the Bearer one
        resp = await gitea.handle(req)
        if resp.status == 401:
            resp.headers.add("Www-Authenticate", f'Basic realm="https://{B}/v2/token"')
        return resp

    net.routes[A] = older_gitea
    assert (await do_pull(net, registries(a={"tls": {"insecure_skip_verify": True}, "auth": AUTH}))).ok


# ---- endpoints, references, missing images ---------------------------------------------------
async def test_manifest_not_found(net):
    image = f"{A}/jaybrto/gwa-webhook:nope"
    res = await do_pull(net, registries(a={"tls": {"insecure_skip_verify": True}, "auth": AUTH}), image)
    assert res.error == f'failed to resolve reference "{image}": {image}: not found'
    assert kubelet_message(res) == (
        f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and unpack image '
        f'"{image}": failed to resolve reference "{image}": {image}: not found'
    )


async def test_mirror_tried_first_then_the_registry(net):
    text = yaml.safe_dump(
        {
            "mirrors": {A: {"endpoint": ["https://mirror.example.test"]}},
            "configs": {A: {"tls": {"insecure_skip_verify": True}, "auth": AUTH}},
        }
    )
    res = await do_pull(net, text)
    assert res.ok
    assert net.calls[0][0].url == "https://mirror.example.test/v2/jaybrto/gwa-webhook/manifests/latest"


async def test_docker_hub_reference(net):
    res = await do_pull(net, None, "nginx")
    assert res.image == "nginx"
    assert res.error == (
        'failed to resolve reference "docker.io/library/nginx:latest": failed to do request: '
        'Head "https://registry-1.docker.io/v2/library/nginx/manifests/latest": '
        "dial tcp: lookup registry-1.docker.io: no such host"
    )


async def test_missing_ca_file(net):
    res = await do_pull(net, registries(a={"tls": {"ca_file": "/nope.crt"}}))
    assert (
        res.error == PREFIX + 'unable to read CA cert "/nope.crt": open /nope.crt: no such file or directory'
    )
    assert net.calls == []


@pytest.mark.parametrize(
    "image,expected",
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("jaybrto/x:1", "docker.io/jaybrto/x:1"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        (f"{A}/org/sub/img@sha256:" + "a" * 64, f"{A}/org/sub/img@sha256:" + "a" * 64),
    ],
)
def test_parse_image(image, expected):
    assert str(parse_image(image)) == expected


def test_crictl_output():
    ok = PullResult(True, IMAGE, digest="sha256:" + "b" * 64)
    assert crictl_output(ok) == (0, "Image is up to date for sha256:" + "b" * 64 + "\n", "")
    bad = PullResult(False, IMAGE, error=PREFIX + "boom")
    rc, out, err = crictl_output(bad, now=0.5)
    line1, line2 = err.splitlines()
    assert rc == 1 and out == ""
    assert (
        '"PullImage from image service failed" err="rpc error: code = Unknown desc = failed to pull and unpack '
        f'image \\"{IMAGE}\\": failed to resolve reference \\"{IMAGE}\\": boom" image="{IMAGE}"' in line1
    )
    assert line1.startswith("E") and ".500000    1234 remote_image.go:180]" in line1
    assert line2 == (
        f"FATA[0000] pulling image: rpc error: code = Unknown desc = failed to pull and unpack image "
        f'"{IMAGE}": {PREFIX}boom'
    )
    assert kubelet_message(bad).startswith(
        f'Failed to pull image "{IMAGE}": rpc error: code = Unknown desc = '
    )


# ---- registries.yaml and what K3s generates from it -------------------------------------------
GUIDE = guide_registries()


def test_render_guide_registries():
    files = render(GUIDE)
    assert sorted(files) == sorted(
        [f"{CONTAINERD_DIR}/config.toml"] + [f"{CONTAINERD_DIR}/certs.d/{h}/hosts.toml" for h in GUIDE_HOSTS]
    )
    for host in GUIDE_HOSTS:
        text = files[f"{CONTAINERD_DIR}/certs.d/{host}/hosts.toml"]
        assert text.startswith(
            "# File generated by k3s. DO NOT EDIT. Use /etc/rancher/k3s/registries.yaml instead.\n"
        )
        doc = tomllib.loads(text)
        assert doc["server"] == f"https://{host}/v2" and doc["skip_verify"] is True
        assert doc["capabilities"] == ["pull", "resolve", "push"]
        assert doc["host"] == {
            f"https://{host}/v2": {"capabilities": ["pull", "resolve"], "skip_verify": True}
        }
    config = files[f"{CONTAINERD_DIR}/config.toml"]
    # the current k3s bundles containerd 2.x: the registry lives under the CRI images plugin
    registry = tomllib.loads(config)["plugins"]["io.containerd.cri.v1.images"]["registry"]
    assert registry["config_path"] == f"{CONTAINERD_DIR}/certs.d"
    assert registry["configs"] == {
        h: {"auth": {"username": "registry-user", "password": "<GITEA_TOKEN>"}} for h in GUIDE_HOSTS
    }
    assert ".tls]" not in config
    assert all(h in config for h in GUIDE_HOSTS)


def test_render_tls_files_and_mirrors():
    text = yaml.safe_dump(
        {
            "mirrors": {"docker.io": {"endpoint": ["https://mirror.example.test:5000"]}},
            "configs": {
                A: {"tls": {"ca_file": "/etc/ssl/a.crt", "cert_file": "/c.pem", "key_file": "/k.pem"}},
                "mirror.example.test:5000": {"tls": {"insecure_skip_verify": True}},
            },
        }
    )
    files = render(text)
    a = tomllib.loads(files[f"{CONTAINERD_DIR}/certs.d/{A}/hosts.toml"])
    assert a["ca"] == ["/etc/ssl/a.crt"] and a["client"] == [["/c.pem", "/k.pem"]]
    assert a["host"][f"https://{A}/v2"]["ca"] == ["/etc/ssl/a.crt"]
    hub = tomllib.loads(files[f"{CONTAINERD_DIR}/certs.d/docker.io/hosts.toml"])
    assert hub["server"] == "https://registry-1.docker.io/v2"
    assert hub["host"] == {
        "https://mirror.example.test:5000/v2": {"capabilities": ["pull", "resolve"], "skip_verify": True}
    }
    assert f"{CONTAINERD_DIR}/certs.d/mirror.example.test:5000/hosts.toml" in files
    assert (
        "registry"
        in tomllib.loads(files[f"{CONTAINERD_DIR}/config.toml"])["plugins"]["io.containerd.cri.v1.images"]
    )


@pytest.mark.parametrize("text", [None, "", "# nothing yet\n"])
def test_empty_registries(text):
    assert parse_registries(text) == {"mirrors": {}, "configs": {}}
    assert list(render(text)) == [f"{CONTAINERD_DIR}/config.toml"]


@pytest.mark.parametrize(
    "text,message",
    [
        ("configs:\n  a:\n\tauth: {}\n", "error converting YAML to JSON: yaml: line 3"),
        ("configs: [a, b]\n", "cannot unmarshal array into Go struct field Registry.configs"),
        ("- a\n", "cannot unmarshal array into Go value of type registries.Registry"),
        (
            "configs:\n  a:\n    auth:\n      password: 123456\n",
            "cannot unmarshal number into Go struct field AuthConfig.configs.auth.password of type string",
        ),
        (
            'configs:\n  a:\n    tls:\n      insecure_skip_verify: "true"\n',
            "cannot unmarshal string into Go struct field TLSConfig.configs.tls.insecure_skip_verify of type bool",
        ),
    ],
)
def test_invalid_registries(text, message):
    with pytest.raises(RegistriesError, match=message):
        parse_registries(text)
    with pytest.raises(RegistriesError):
        render(text)


# ---- what each k3s release generates (wizard/k3sversions.py) -----------------------------------
PRE_2024, BROKEN, FIXED, CURRENT = "v1.25.16+k3s4", "v1.29.3+k3s1", "v1.29.4+k3s1", "v1.33.5+k3s1"
SKIP_AUTH = {"tls": {"insecure_skip_verify": True}, "auth": AUTH}


def test_before_feb_2024_tls_and_auth_are_in_config_toml_and_there_is_no_certs_d():
    files = render(registries(a=SKIP_AUTH), PRE_2024)
    assert list(files) == [f"{CONTAINERD_DIR}/config.toml"]
    registry = tomllib.loads(files[f"{CONTAINERD_DIR}/config.toml"])["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert "config_path" not in registry
    assert registry["configs"][A] == {"auth": AUTH, "tls": {"insecure_skip_verify": True}}


@pytest.mark.parametrize("version", [BROKEN, "v1.26.15+k3s1", "v1.27.12+k3s1", "v1.28.8+k3s1"])
def test_the_broken_releases_write_a_hosts_toml_without_a_host_table(version):
    files = render(registries(a=SKIP_AUTH), version)
    doc = tomllib.loads(files[f"{CONTAINERD_DIR}/certs.d/{A}/hosts.toml"])
    assert doc["skip_verify"] is True and "host" not in doc
    registry = tomllib.loads(files[f"{CONTAINERD_DIR}/config.toml"])["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert registry["configs"][A] == {"auth": AUTH}  # the auth stays in config.toml


@pytest.mark.parametrize(("version", "cri"), [(FIXED, "io.containerd.grpc.v1.cri"),
                                              ("v1.26.13+k3s1", "io.containerd.grpc.v1.cri"),
                                              ("v1.31.6+k3s1", "io.containerd.cri.v1.images"),
                                              (CURRENT, "io.containerd.cri.v1.images")])
def test_fixed_and_current_releases_write_a_host_table_and_auth_in_the_cri_section(version, cri):
    files = render(registries(a=SKIP_AUTH), version)
    doc = tomllib.loads(files[f"{CONTAINERD_DIR}/certs.d/{A}/hosts.toml"])
    assert doc["skip_verify"] is True and doc["host"]
    registry = tomllib.loads(files[f"{CONTAINERD_DIR}/config.toml"])["plugins"][cri]["registry"]
    assert registry["config_path"] == f"{CONTAINERD_DIR}/certs.d" and registry["configs"][A] == {"auth": AUTH}


async def test_on_a_broken_release_the_tls_settings_are_lost_and_the_pull_fails_x509(net):
    res = await do_pull(net, registries(a=SKIP_AUTH), k3s_version=BROKEN)
    assert not res.ok and "x509: certificate signed by unknown authority" in res.error
    assert (await do_pull(net, registries(a=SKIP_AUTH), k3s_version=FIXED)).ok
    assert (await do_pull(net, registries(a=SKIP_AUTH), k3s_version=PRE_2024)).ok


async def test_on_a_broken_release_a_mirror_entry_for_the_host_is_the_workaround(net):
    text = yaml.safe_dump({"mirrors": {A: {"endpoint": [f"https://{A}"]}}, "configs": {A: SKIP_AUTH}})
    assert tomllib.loads(render(text, BROKEN)[f"{CONTAINERD_DIR}/certs.d/{A}/hosts.toml"])["host"]
    assert (await do_pull(net, text, k3s_version=BROKEN)).ok
