"""A Gitea-like registry stack from real parts, on loopback only, for the auth-flow and image-copy tests.

- Debian's ``docker-registry`` (CNCF distribution 2.8) with token auth, plain HTTP on 127.0.0.1;
- a small token issuer written here that behaves like Gitea's ``/v2/token`` (Basic user:token →
  ``{"token": JWT}``; wrong password → 401 with Gitea's JSON; a read-only user gets only pull;
  ``anonymous_on_bad_credentials`` reproduces Gitea before 1.17, go-gitea/gitea#20563);
- real nginx as the TLS proxy in front of both, with certificates made by
  ``wizard.certs.make_proxy_cert``, resolving its upstreams at request time through dnsmasq
  (the guide's ``resolver`` + ``set $upstream`` pattern);
- real skopeo as the client of the whole flow, run in ``unshare -m`` with a private hosts file and
  a loopback-only resolv.conf, so no test hostname ever reaches the machine's resolver.

``RegistryPair`` is two such stacks (the image copy's source and target) with a quirk proxy
(``quirkproxy.py``) before each registry. Every process is started here and stopped by its PID in
``Stack.stop``. The facts these parts
need (JWT rules distribution enforces, nginx flags) are in /work/shared/test-environment.md.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from sandbox.realgitea import RealGitea
from wizard.certs import make_proxy_cert

SERVICE = "container_registry"
ISSUER = "gitea-test"
REGISTRY_HOST = "registry.test"
REALM_HOST = "auth.test"
NOREALM_HOST = "norealm.test"  # served by nginx with no route: the missing TLS Ingress
BACKEND_DOMAIN = "stack.test"  # names only dnsmasq knows (nginx's resolver)
ORG = "acme"
REPO = f"{ORG}/app"
WRITER, READER = "registry-user", "ci-reader"


def expired_cert(hostname: str):
    """A certificate like the wizard's, but one that expired yesterday."""
    import datetime as dt

    from wizard.certs import make_proxy_cert
    return make_proxy_cert(hostname, 9, start=dt.datetime.now(dt.UTC) - dt.timedelta(days=10))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def stop_pid(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL; always reap it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def wait_port(port: int, proc: subprocess.Popen | None, what: str, log: Path | None = None,
              timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:] if log and log.exists() else ''}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


# ---------------------------------------------------------------------------------- token issuer
@dataclass
class TokenSigner:
    """ES256 JWTs that distribution 2.8 accepts: x5c chaining to the rootcertbundle, raw r||s."""

    root_pem: bytes = b""
    _key: ec.EllipticCurvePrivateKey | None = None
    _x5c: list[str] = field(default_factory=list)

    @classmethod
    def new(cls) -> TokenSigner:
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gitea-test token root")])
        root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
                .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(root_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gitea-test token signer")]))
                .issuer_name(root_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=2))
                .sign(root_key, hashes.SHA256()))
        return cls(root.public_bytes(serialization.Encoding.PEM), key,
                   [base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()])

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "ES256", "x5c": self._x5c}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@dataclass
class User:
    password: str
    actions: tuple[str, ...]  # granted on every repository of ORG


class TokenIssuer:
    """Gitea's ``GET /v2/token`` (POST answers 404, as Gitea's does), in a thread."""

    def __init__(self, signer: TokenSigner, users: dict[str, User], *, anonymous_on_bad_credentials: bool = False):
        self.signer = signer
        self.users = users
        self.anonymous_on_bad_credentials = anonymous_on_bad_credentials
        self.requests: list[tuple[str, str, str]] = []  # (method, path?query, user or "")
        self.port = free_port()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                issuer.requests.append(("POST", self.path, ""))
                self._json(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                if parts.path.startswith("/api/v1/"):  # Gitea's API, as far as "does the owner exist" goes
                    found = parts.path == f"/api/v1/orgs/{ORG}"
                    self._json(200 if found else 404, {"username": ORG} if found else {"message": "not found"})
                    return
                if parts.path != "/v2/token":
                    self._json(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
                    return
                name, user = "", None
                auth = self.headers.get("Authorization") or ""
                if auth.lower().startswith("basic "):
                    try:
                        name, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
                    except ValueError:
                        name, password = "", ""
                    user = issuer.users.get(name)
                    if user is None or not secrets.compare_digest(user.password, password):
                        issuer.requests.append(("GET", self.path, f"bad:{name}"))
                        if not issuer.anonymous_on_bad_credentials:
                            self._json(401, {"errors": [{"code": "UNAUTHORIZED",
                                                         "message": "invalid username or password"}]})
                            return
                        name, user = "", None  # Gitea before 1.17: the ghost user gets a token
                issuer.requests.append(("GET", self.path, name if user else ""))
                query = parse_qs(parts.query)
                access = []
                for scope in (s for v in query.get("scope", []) for s in v.split(" ") if s):
                    kind, _, rest = scope.partition(":")
                    repo, _, actions = rest.rpartition(":")
                    if (kind, repo, actions) == ("registry", "catalog", "*"):  # listing every repository: the
                        if user is not None and "push" in user.actions:  # writer only, as an admin right
                            access.append({"type": "registry", "name": "catalog", "actions": ["*"]})
                        continue
                    if kind != "repository" or not repo:
                        continue
                    granted = [a for a in actions.split(",")
                               if user is not None and repo.startswith(ORG + "/") and a in user.actions]
                    access.append({"type": "repository", "name": repo, "actions": granted})
                now = int(time.time())
                token = issuer.signer.sign({"iss": ISSUER, "sub": name if user else "", "aud": SERVICE,
                                            "exp": now + 300, "nbf": now - 10, "iat": now,
                                            "jti": uuid.uuid4().hex, "access": access})
                self._json(200, {"token": token, "access_token": token, "expires_in": 300,
                                 "issued_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="token-issuer", daemon=True)

    def start(self) -> TokenIssuer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# ---------------------------------------------------------------------------------- OCI image
def oci_layout(directory: Path, tag: str = "latest") -> Path:
    """A one-layer OCI image layout that ``skopeo copy oci:DIR:TAG`` can push."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return "sha256:" + digest, len(data)

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        body = b"hello from the ghcr2gitea real-stack test\n"
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(body), 0
        tar.addfile(info, io.BytesIO(body))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    layer_digest, layer_size = put(layer)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue())
                                                                   .hexdigest()]}}).encode()
    config_digest, config_size = put(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": config_digest, "size": config_size},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": layer_digest, "size": layer_size}]}).encode()
    m_digest, m_size = put(manifest)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest, "size": m_size,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return directory


# ---------------------------------------------------------------------------------- the stack
@dataclass
class SkopeoResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def crane_binary() -> Path:
    """crane as scripts/build-real builds it (skips locally when missing, fails in CI: require_components)."""
    from helpers import require_components

    from sandbox import realapi
    require_components("crane")
    return realapi.binary("crane")


@dataclass
class Binaries:
    registry: str
    nginx: str
    skopeo: str
    dnsmasq: str
    unshare: str


class Stack:
    """One registry + issuer + nginx + dnsmasq, all on 127.0.0.1; ``stop()`` ends every process by PID.

    ``realm_host`` is the host the registry's challenge names (``norealm.test``: nginx answers 404
    there, as Traefik does without the TLS Ingress); ``realm_cert_name`` is the name the realm's
    certificate is made for (another name: the wrong-SAN case).
    """

    def __init__(self, bins: Binaries, *, realm_host: str = REALM_HOST, realm_cert_name: str | None = None,
                 realm_cert_expired: bool = False, anonymous_on_bad_credentials: bool = False,
                 gitea: bool = False):
        self.bins = bins
        self.dir = Path(tempfile.mkdtemp(prefix="ghcr2gitea-real-"))
        self.realm_host = realm_host
        self.realm_cert_name = realm_cert_name or realm_host
        self.port = free_port()  # nginx: every public host on this one port, chosen by SNI
        self.registry_port = free_port()
        self.dns_port = free_port()
        self.tokens = {WRITER: secrets.token_hex(20), READER: secrets.token_hex(20)}
        self.signer = TokenSigner.new()
        self.issuer = TokenIssuer(self.signer, {WRITER: User(self.tokens[WRITER], ("pull", "push")),
                                                READER: User(self.tokens[READER], ("pull",))},
                                  anonymous_on_bad_credentials=anonymous_on_bad_credentials)
        # gitea=True: behind nginx is a real Gitea (sandbox/realgitea.py) instead of docker-registry and
        # the issuer; its ROOT_URL is the realm host, its users and tokens are made by its own admin commands
        # (a string names the binary scripts/build-real made: "gitea", or "gitea-1.21" before 1.22.1)
        self.gitea = RealGitea(self.dir / "gitea", root_url=self.root_url_for(realm_host), org=ORG, writer=WRITER,
                               reader=READER, binary_name=gitea if isinstance(gitea, str) else "gitea") \
            if gitea else None
        self.procs: dict[str, subprocess.Popen] = {}
        # the realm's certificate may be made for another name, or have expired
        certs = {REGISTRY_HOST: make_proxy_cert(REGISTRY_HOST, 30)}
        for host in (REALM_HOST, NOREALM_HOST):
            if host != realm_host:
                certs[host] = make_proxy_cert(host, 30)
            elif realm_cert_expired:
                certs[host] = expired_cert(self.realm_cert_name)
            else:
                certs[host] = make_proxy_cert(self.realm_cert_name, 30)
        self.certs = certs
        self.certs_dir = self.dir / "certs"  # what a client is told to trust (skopeo --cert-dir)
        self.certs_dir.mkdir()
        for host, c in certs.items():
            (self.certs_dir / f"{host}.crt").write_bytes(c.cert_pem)
        self.ca_bundle = self.dir / "ca-bundle.pem"
        self.ca_bundle.write_bytes(b"".join(c.cert_pem for c in certs.values()))

    # -------------------------------------------------------------- names
    @property
    def registry(self) -> str:
        return f"{REGISTRY_HOST}:{self.port}"

    @property
    def realm(self) -> str:
        return f"https://{self.realm_host}:{self.port}/v2/token"

    @property
    def root_url(self) -> str:
        return self.root_url_for(self.realm_host)

    def root_url_for(self, host: str) -> str:
        return f"https://{host}:{self.port}/"

    def resolve(self) -> list[str]:
        """``--resolve`` entries for the wizard's probe: every public name of the stack → 127.0.0.1."""
        return [f"{h}:{self.port}:127.0.0.1" for h in (REGISTRY_HOST, REALM_HOST, NOREALM_HOST)]

    # -------------------------------------------------------------- lifecycle
    def start(self) -> Stack:
        try:
            self._start_dnsmasq()
            if self.gitea is not None:
                self.gitea.start()
                self.tokens = {u: self.gitea.users[u].token for u in (WRITER, READER)}
            else:
                self.issuer.start()
                self._start_registry()
            self._start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in list(self.procs):
            stop_pid(self.procs.pop(name))
        if self.gitea is not None:
            self.gitea.stop()
        else:  # the issuer runs only in front of docker-registry (shutting down one never started blocks)
            with contextlib.suppress(Exception):
                self.issuer.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop_dnsmasq(self) -> None:
        """The resolver goes down (nginx keeps running and resolves per request)."""
        stop_pid(self.procs.pop("dnsmasq", None))

    def _spawn(self, name: str, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=self.dir, start_new_session=True)
        self.procs[name] = proc
        return proc

    def _start_dnsmasq(self) -> None:
        log = self.dir / "dnsmasq.log"
        proc = self._spawn("dnsmasq", [self.bins.dnsmasq, "-k", "--conf-file=/dev/null", "--no-resolv",
                                       "--no-hosts", f"--port={self.dns_port}", "--listen-address=127.0.0.1",
                                       "--bind-interfaces", f"--address=/{BACKEND_DOMAIN}/127.0.0.1",
                                       f"--pid-file={self.dir / 'dnsmasq.pid'}", "--log-facility=-"], log)
        wait_port(self.dns_port, proc, "dnsmasq", log)  # it listens on TCP too

    def _start_registry(self) -> None:
        bundle = self.dir / "token-root.pem"
        bundle.write_bytes(self.signer.root_pem)
        (self.dir / "data").mkdir()
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.dir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.registry_port}", "secret": secrets.token_hex(16)},
            "auth": {"token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                               "rootcertbundle": str(bundle)}},
        }
        path = self.dir / "registry.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        log = self.dir / "registry.log"
        proc = self._spawn("registry", [self.bins.registry, "serve", str(path)], log)
        wait_port(self.registry_port, proc, "docker-registry", log)

    def _start_nginx(self) -> None:
        d = self.dir / "nginx"
        for sub in ("tmp", "logs"):
            (d / sub).mkdir(parents=True)
        servers = []
        if self.gitea is not None:  # Gitea serves the registry and its own /v2/token on every host
            upstream = {REGISTRY_HOST: f"gitea.{BACKEND_DOMAIN}:{self.gitea.port}",
                        REALM_HOST: f"gitea.{BACKEND_DOMAIN}:{self.gitea.port}"}
        else:
            upstream = {REGISTRY_HOST: f"registry.{BACKEND_DOMAIN}:{self.registry_port}",
                        REALM_HOST: f"issuer.{BACKEND_DOMAIN}:{self.issuer.port}"}
        for host, cert in self.certs.items():
            crt, key = d / f"{host}.crt", d / f"{host}.key"
            crt.write_bytes(cert.cert_pem)
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(cert.key_pem)
            if host in upstream:
                # the guide's pattern: a variable in proxy_pass makes nginx resolve per request
                location = f"""
    location / {{
      set $upstream http://{upstream[host]};
      proxy_pass $upstream;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_http_version 1.1;
    }}"""
            else:  # the realm host without a route: what Traefik answers when the TLS Ingress is missing
                location = """
    location / {
      default_type text/plain;
      return 404 "404 page not found\\n";
    }"""
            servers.append(f"""
  server {{
    listen 127.0.0.1:{self.port} ssl;
    server_name {host};
    ssl_certificate {crt};
    ssl_certificate_key {key};
    client_max_body_size 0;{location}
  }}""")
        conf = f"""user root;
worker_processes 1;
pid {d}/nginx.pid;
events {{ worker_connections 128; }}
http {{
  access_log {d}/logs/access.log;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  resolver 127.0.0.1:{self.dns_port} valid=1s ipv6=off;
  resolver_timeout 1s;
{''.join(servers)}
}}
"""
        (d / "nginx.conf").write_text(conf)
        log = d / "logs" / "stderr.log"
        proc = self._spawn("nginx", [self.bins.nginx, "-e", str(d / "logs" / "error.log"), "-p", str(d) + "/",
                                     "-c", str(d / "nginx.conf"), "-g", "daemon off;"], log)
        wait_port(self.port, proc, "nginx", log)

    def nginx_error_log(self) -> str:
        p = self.dir / "nginx" / "logs" / "error.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -------------------------------------------------------------- skopeo
    def _box(self, tool: str) -> Path:
        """A private folder for one run of a client: its HOME, and the /etc/hosts and resolv.conf it will see
        (every .test name on 127.0.0.1, no other resolver)."""
        box = self.dir / f"{tool}-{secrets.token_hex(3)}"
        (box / "home").mkdir(parents=True)
        (box / "run").mkdir()
        (box / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {h}\n" for h in
                                                                    (REGISTRY_HOST, REALM_HOST, NOREALM_HOST)))
        (box / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        return box

    def _run_boxed(self, box: Path, argv: list[str], env: dict, timeout: float) -> SkopeoResult:
        """``argv`` as root in its own mount namespace, with the box's /etc/hosts and resolv.conf bound over."""
        script = 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"'
        full = [self.bins.unshare, "-m", "--propagation", "private", "--", "sh", "-c", script, "sh",
                str(box / "hosts"), str(box / "resolv.conf"), *argv]
        p = subprocess.run(full, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
        return SkopeoResult(p.returncode, p.stdout, p.stderr)

    def crane(self, *args: str, user: str = WRITER, peers: tuple[Stack, ...] = (), timeout: float = 60) -> SkopeoResult:
        """``crane ARGS`` (go-containerregistry, a second independent client) logged in as ``user`` through a
        Docker config file (mode 600), trusting this stack's CA, in its own mount namespace. ``peers``: other
        stacks it may also talk to (their writer's login and their CA), e.g. the source of a ``crane copy``."""
        box = self._box("crane")
        docker = box / "home" / ".docker"
        docker.mkdir()
        auths = {st.registry: {"username": WRITER, "password": st.tokens[WRITER]} for st in peers}
        auths[self.registry] = {"username": user, "password": self.tokens[user]}
        fd = os.open(docker / "config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": auths}, f)
        bundle = box / "ca.pem"
        bundle.write_bytes(b"\n".join(st.ca_bundle.read_bytes() for st in (self, *peers)))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(box / "home"), "DOCKER_CONFIG": str(docker),
               "SSL_CERT_FILE": str(bundle), "LANG": "C"}
        return self._run_boxed(box, [str(crane_binary()), *args], env, timeout)

    def skopeo(self, *args: str, trust: bool = True, timeout: float = 60) -> SkopeoResult:
        """``skopeo ARGS`` as root in its own mount namespace: private /etc/hosts and resolv.conf."""
        box = self._box("skopeo")
        policy = box / "policy.json"
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
        cert_dir = self.certs_dir if trust else box / "no-certs"
        cert_dir.mkdir(exist_ok=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(box / "home"), "XDG_RUNTIME_DIR": str(box / "run"),
               "REGISTRY_AUTH_FILE": str(box / "auth.json"), "LANG": "C",
               "CONTAINERS_REGISTRIES_CONF": str(box / "registries.conf")}
        (box / "registries.conf").write_text("")
        argv = [self.bins.skopeo, "--policy", str(policy), "--tmpdir", str(box), *args]
        return self._run_boxed(box, [a.replace("{certs}", str(cert_dir)) for a in argv], env, timeout)

    def skopeo_inspect(self, user: str, password: str, *, trust: bool = True) -> SkopeoResult:
        return self.skopeo("inspect", "--creds", f"{user}:{password}", "--cert-dir", "{certs}",
                           f"docker://{self.registry}/{REPO}:latest", trust=trust)

    def skopeo_copy(self, user: str, password: str, *, tag: str = "latest", trust: bool = True) -> SkopeoResult:
        layout = self.dir / "layout"
        if not layout.exists():
            oci_layout(layout)
        return self.skopeo("copy", "--dest-creds", f"{user}:{password}", "--dest-cert-dir", "{certs}",
                           f"oci:{layout}:latest", f"docker://{self.registry}/{REPO}:{tag}", trust=trust)


# ---------------------------------------------------------------------------------- a registry pair
class RegistryPair:
    """Two stacks — a source registry and a target registry, each with its own token issuer, nginx and
    certificates — and a quirk proxy (``tests/real/quirkproxy.py``) in front of each registry's plain
    port for the behaviours docker-registry lacks. ``stop()`` ends every process and thread."""

    def __init__(self, bins: Binaries):
        from real.quirkproxy import QuirkProxy  # noqa: F401 - imported here: stack.py stays usable alone
        self.source = Stack(bins)
        self.target = Stack(bins)
        self.source_proxy: QuirkProxy | None = None
        self.target_proxy: QuirkProxy | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="ghcr2gitea-pair-"))

    def start(self) -> RegistryPair:
        from real.quirkproxy import QuirkProxy
        try:
            self.source.start()
            self.target.start()
            self.source_proxy = QuirkProxy(self.source.registry_port).start()
            self.target_proxy = QuirkProxy(self.target.registry_port).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for p in (self.source_proxy, self.target_proxy):
            if p is not None:
                with contextlib.suppress(Exception):
                    p.stop()
        self.source.stop()
        self.target.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def resolve(self) -> list[str]:
        return self.source.resolve() + self.target.resolve()

    # each side keeps its own CA bundle: both stacks name their hosts alike, with different certificates

    @staticmethod
    def creds(st: Stack, user: str = WRITER) -> str:
        return f"{user}:{st.tokens[user]}"


def push_layout(st: Stack, layout: Path, tag: str, repo: str = REPO, *, docker: bool = False,
                as_tag: str | None = None) -> SkopeoResult:
    """``skopeo copy --all --preserve-digests oci:LAYOUT:TAG docker://…/REPO:TAG`` through the stack's nginx.

    ``docker``: skopeo converts a single-platform image to a Docker v2 manifest instead (an OCI layout
    cannot hold Docker media types)."""
    how = ["--format", "v2s2"] if docker else ["--all", "--preserve-digests"]
    res = st.skopeo("copy", *how, "--dest-creds", RegistryPair.creds(st),
                    "--dest-cert-dir", "{certs}", f"oci:{layout}:{tag}", f"docker://{st.registry}/{repo}:{as_tag or tag}",
                    timeout=300)
    if not res.ok:
        raise AssertionError(f"skopeo could not push {tag}: {res.stderr[-800:]}")
    return res


def raw_manifest(st: Stack, repo: str, ref: str) -> bytes | None:
    """The manifest bytes skopeo reads (``inspect --raw``), or None when skopeo cannot read it."""
    sep = "@" if ref.startswith("sha256:") else ":"
    res = st.skopeo("inspect", "--raw", "--creds", RegistryPair.creds(st), "--cert-dir", "{certs}",
                    f"docker://{st.registry}/{repo}{sep}{ref}")
    if not res.ok:
        return None
    return res.stdout.encode("utf-8", "surrogateescape")
