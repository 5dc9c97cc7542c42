"""A real containerd (Debian's 1.6) for one test, run with the configuration the sandbox's node model generates.

K3s turns a node's registries.yaml into containerd's ``config.toml`` (CRI plugin, ``registry.config_path`` and
``configs."<host>".auth``) and ``certs.d/<host>/hosts.toml``. ``sandbox/containerd.py`` models that
(``render``) and the pull that follows (``pull``). Here the model's files are handed to a real containerd:

- ``config.toml`` is the model's, parsed and written back with only the node's PATHS replaced by this test's
  temporary ones (root, state, socket, opt, CNI dirs, stream port, ``config_path``); the registry section —
  ``config_path`` and every ``configs."<host>".auth`` — is taken as generated, so the CRI plugin must load it;
- ``certs.d`` is the model's, byte for byte;
- files the registries.yaml names on the node (the CA bundle at ``/etc/rancher/k3s/…``) sit at that very path:
  containerd and ``ctr`` run in ``unshare -m`` with a private copy-on-write ``/etc`` (overlayfs), which also holds
  the hosts file mapping the stack's ``.test`` names to 127.0.0.1 and a loopback-only resolv.conf, so nothing
  reaches DNS and the machine's own /etc is never written;
- a pull is ``ctr images pull --hosts-dir certs.d --user U:P`` with the user and password K3s would hand over
  (``configs."<registry host>".auth`` of that registries.yaml).

``model_pull`` runs the MODEL's pull (``sandbox.containerd.pull``) against the same real stack, with the
model's own certificate checks (``pki.verify_chain``) on the certificates nginx really presents, so a test can
put both side by side. Every process is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from real.stack import stop_pid

from sandbox import containerd as C
from sandbox import pki
from sandbox.http import Headers, HttpRequest, HttpResponse, NetError, TLSConfig

CRI = "io.containerd.grpc.v1.cri"
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass
class CtrResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def error(self) -> str:
        """ctr's last error line (``ctr: failed to resolve reference …``)."""
        lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else ""


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, str):
        return C._q(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def toml_dump(doc: dict) -> str:
    """TOML for nested tables of strings, booleans, numbers and lists (what containerd's config uses)."""
    out: list[str] = []

    def table(prefix: list[str], t: dict) -> None:
        scalars = {k: v for k, v in t.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in t.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            out.append("[" + ".".join(C._q(p) for p in prefix) + "]")
        out.extend(f"{C._q(k)} = {_toml_value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            table([*prefix, k], v)

    table([], doc)
    return "\n".join(out) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Containerd:
    """One containerd, started from the model's generated files; ``stop()`` ends it by PID.

    ``generated`` is ``containerd.render(registries_yaml)``: node path → text. ``node_files`` are other files on
    the node (the CA bundle), by their absolute node path under /etc. ``hosts`` are the names the node maps to
    127.0.0.1. ``trusted_by_os``: certificates the node's OS trust store holds besides Debian's roots (a
    registry host with a publicly trusted certificate, as Caddy's Let's Encrypt one is).
    """

    def __init__(self, *, containerd: str, ctr: str, unshare: str, nsenter: str, generated: dict[str, str],
                 hosts: list[str], node_files: dict[str, bytes] | None = None,
                 trusted_by_os: list[bytes] = ()):
        self.bins = {"containerd": containerd, "ctr": ctr, "unshare": unshare, "nsenter": nsenter}
        self.dir = Path(tempfile.mkdtemp(prefix="ghcr2gitea-ctrd-"))
        self.sock = self.dir / "containerd.sock"
        self.certs_d = self.dir / "certs.d"
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "containerd.log"
        etc = self.dir / "etc-upper"  # the node's /etc: what is written here shows over the machine's /etc
        (self.dir / "etc-work").mkdir()
        etc.mkdir()
        (etc / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {h}\n" for h in hosts))
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        if trusted_by_os:
            (etc / "ssl" / "certs").mkdir(parents=True)
            system = SYSTEM_BUNDLE.read_bytes() if SYSTEM_BUNDLE.exists() else b""
            (etc / "ssl" / "certs" / SYSTEM_BUNDLE.name).write_bytes(system + b"".join(trusted_by_os))
        for path, data in (node_files or {}).items():
            if not path.startswith("/etc/"):
                raise ValueError(f"node file {path}: only files under /etc can be placed on the test node")
            target = etc / path.removeprefix("/etc/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        # certs.d exactly as generated
        self.config_toml = None
        for path, text in generated.items():
            if path.startswith(C.CERTS_DIR + "/"):
                target = self.certs_d / path.removeprefix(C.CERTS_DIR + "/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            elif path == f"{C.CONTAINERD_DIR}/config.toml":
                self.config_toml = text
        self.certs_d.mkdir(exist_ok=True)
        if self.config_toml is None:
            raise ValueError("the generated files hold no config.toml")
        self.config = self.dir / "config.toml"
        self.config.write_text(toml_dump(self._localise(tomllib.loads(self.config_toml))))

    def _localise(self, doc: dict) -> dict:
        """The model's config.toml with the node's paths swapped for this test's; the registry section as is."""
        d = self.dir
        doc = {**doc, "root": str(d / "root"), "state": str(d / "state"),
               "grpc": {"address": str(self.sock)}, "ttrpc": {"address": str(d / "containerd.sock.ttrpc")}}
        plugins = doc.setdefault("plugins", {})
        plugins.setdefault("io.containerd.internal.v1.opt", {})["path"] = str(d / "opt")
        cri = plugins.setdefault(CRI, {})
        cri["stream_server_port"] = str(free_port())
        cri["disable_tcp_service"] = True
        cni = cri.setdefault("cni", {})
        cni["bin_dir"], cni["conf_dir"] = str(d / "cni-bin"), str(d / "cni-conf")
        registry = cri.get("registry") or {}
        if registry.get("config_path") != C.CERTS_DIR:
            raise ValueError(f"the model's config_path is {registry.get('config_path')!r}, not {C.CERTS_DIR}")
        registry["config_path"] = str(self.certs_d)
        return doc

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 20.0) -> Containerd:
        script = ('mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc && shift 2 '
                  '&& exec "$@"')
        argv = [self.bins["unshare"], "-m", "--propagation", "private", "--", "sh", "-c", script, "sh",
                str(self.dir / "etc-upper"), str(self.dir / "etc-work"), self.bins["containerd"],
                "--config", str(self.config), "--log-level", "info"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.dir, start_new_session=True, env=self._env())
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited with {self.proc.returncode}: {self.log_text()[-3000:]}")
            if self.sock.exists() and self.ctr("version").ok:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"containerd did not answer on {self.sock} within {timeout} s: {self.log_text()[-3000:]}")

    def stop(self) -> None:
        stop_pid(self.proc, timeout=10)
        if self.proc is not None:
            # the overlay mounts lived in containerd's own mount namespace: gone with it. Snapshots are plain dirs.
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _env(self) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.dir), "LANG": "C"}

    # ------------------------------------------------------------------ clients
    def ctr(self, *args: str, timeout: float = 60) -> CtrResult:
        """``ctr ARGS`` inside containerd's mount namespace (its hosts file, resolv.conf, /etc/rancher)."""
        if self.proc is None:
            raise RuntimeError("containerd is not started")
        argv = [self.bins["nsenter"], f"--mount=/proc/{self.proc.pid}/ns/mnt", "--", self.bins["ctr"],
                "--address", str(self.sock), *args]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self._env(),
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            return CtrResult(124, e.stdout or "", f"ctr {' '.join(args[:2])} did not finish in {timeout} s")
        return CtrResult(p.returncode, p.stdout, p.stderr)

    def cri_loaded(self) -> bool:
        """The CRI plugin loaded with the model's config.toml (containerd skips it when its config is refused)."""
        res = self.ctr("plugins", "ls")
        return res.ok and any(line.split()[:2] == ["io.containerd.grpc.v1", "cri"] and line.split()[-1] == "ok"
                              for line in res.stdout.splitlines())

    def pull(self, image: str, creds: tuple[str, str] | None) -> CtrResult:
        """``ctr images pull`` with the generated certs.d and the credentials K3s would pass."""
        args = ["--namespace", "k8s.io", "images", "pull", "--hosts-dir", str(self.certs_d)]
        if creds:
            args += ["--user", f"{creds[0]}:{creds[1]}"]
        return self.ctr(*args, image)


def k3s_credentials(registries_text: str, host: str) -> tuple[str, str] | None:
    """What K3s hands containerd for ``host``: ``configs."<host>".auth`` of the registries.yaml (the model's parse)."""
    return C._config_creds(C.parse_registries(registries_text), host)


# ---------------------------------------------------------------------- the model's pull on the real stack
def _real_fetch(addr: str, system_roots: list[x509.Certificate]):
    """A Fetch for the model's pull that talks to the real stack: every name dials ``addr`` (the node's hosts
    file), TLS is checked by the MODEL (``pki.verify_chain``) on the certificate the server really presents."""

    def blocking(req: HttpRequest, tls: TLSConfig) -> HttpResponse:
        host, port = req.host, req.port
        try:
            raw = socket.create_connection((addr, port), timeout=10)
        except OSError as e:
            raise NetError(f"dial tcp {addr}:{port}: connect: connection refused", kind="refused") from e
        if req.scheme == "https":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            sock = ctx.wrap_socket(raw, server_hostname=host)
            leaf = x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))
            err = pki.verify_chain([leaf], host, tls, system_roots)
            if err is not None:
                sock.close()
                raise NetError("tls: failed to verify certificate: " + err.go, kind="tls")
        else:
            sock = raw
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.sock = sock
        try:
            headers = dict(req.headers.items)
            headers.setdefault("Host", req.parts.netloc)
            conn.request(req.method, req.url.split(req.parts.netloc, 1)[1] or "/", body=req.body or None,
                         headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            return HttpResponse(resp.status, Headers(list(resp.getheaders())), body)
        finally:
            conn.close()

    async def fetch(req: HttpRequest, tls: TLSConfig) -> HttpResponse:
        return await asyncio.to_thread(blocking, req, tls)

    return fetch


def model_pull(image: str, registries_text: str | None, *, node_files: dict[str, bytes] | None = None,
               trusted_by_os: list[bytes] = (), k3s_version: str | None = None) -> C.PullResult:
    """The node model's pull of ``image`` with this registries.yaml loaded (by ``k3s_version``), on the real stack."""
    roots = [c for pem in trusted_by_os for c in pki.load_pems(pem)]
    files = node_files or {}
    return asyncio.run(C.pull(image, registries_text, _real_fetch("127.0.0.1", roots),
                              read_file=lambda p: files.get(p), k3s_version=k3s_version))


def as_containerd_16(model_error: str) -> str:
    """The model's error (K3s's containerd 1.7, built with Go ≥ 1.20) as Debian's containerd 1.6.20 words it.

    The only two differences the real pulls showed: Go before 1.20 has no ``tls: failed to verify certificate:``
    before an x509 error, and containerd 1.6's unexpected-status error names neither the method nor the URL."""
    text = model_error.replace("tls: failed to verify certificate: x509:", "x509:")
    return re.sub(r"unexpected status from [A-Z]+ request to \S+: ", "unexpected status: ", text)
