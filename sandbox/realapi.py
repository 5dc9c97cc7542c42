"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

Built from the Go module proxy by ``scripts/build-real`` into the cache (``GHCR2GITEA_CACHE``, default
``/var/cache/ghcr2gitea``). This is the oracle the sandbox's own API server is compared with (the field's
envtest, one step further: with the controller-manager, so Deployments get ReplicaSets and pods, and
namespaces finish terminating). No kubelet and no scheduler run: whoever plays the nodes binds pods
(``nodeName``) and patches ``pods/status``, as kwok does.

Authentication is a static token (``--token-auth-file``) for an admin in ``system:masters``; RBAC is on,
so ServiceAccount tokens (TokenRequest) are authorised as in a real cluster. Every request is written
to an audit log (level Metadata), which is how the request log of a real-mode world is read.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("GHCR2GITEA_CACHE", "/var/cache/ghcr2gitea"))
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
SERVICE_CIDR = "10.43.0.0/16"  # k3s's default, so kube-dns can be 10.43.0.10 as in the guide


class ComponentMissing(Exception):
    """A real component is not built; the message gives the command that builds it."""


def binary(name: str) -> Path:
    path = CACHE / "bin" / name
    if not os.access(path, os.X_OK):
        raise ComponentMissing(f"{name} is not built in {CACHE / 'bin'}: run scripts/build-real {name}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pki(d: Path) -> None:
    """A CA, the API server's serving certificate (127.0.0.1, localhost, the service IP) and the SA key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ghcr2gitea real-api CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("10.43.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                                  "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False).sign(ca_key, hashes.SHA256()))
    # the API server's client certificate towards the kubelets (pods/log goes through them), which the
    # node agent's kubelet endpoint requires
    kc_key = ec.generate_private_key(ec.SECP256R1())
    kc = (x509.CertificateBuilder().subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters")]))
          .issuer_name(ca_name).public_key(kc_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
          .sign(ca_key, hashes.SHA256()))
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "apiserver.crt": cert.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": pem_key(key),
        "kubelet-client.crt": kc.public_bytes(serialization.Encoding.PEM),
        "kubelet-client.key": pem_key(kc_key),
        "sa.key": pem_key(sa),
        "sa.pub": sa.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
        (d / name).chmod(0o600)


ADMIN_USER = "ghcr2gitea-admin"
AGENT_USER = "ghcr2gitea-node-agent"  # the simulated nodes' kubelets (they are what a kubelet is to k3s)
KCM_USER = "system:kube-controller-manager"
WORLD_USERS = {AGENT_USER, KCM_USER, "system:apiserver"}  # the world's own traffic, not a client's

_VERBS = {"get": "GET", "list": "GET", "watch": "GET", "create": "POST", "update": "PUT", "patch": "PATCH",
          "delete": "DELETE", "deletecollection": "DELETE"}


def _epoch(rfc3339: str) -> float:
    try:
        return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


AUDIT_POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
                "rules": [{"level": "Metadata"}]}


@dataclass
class RealControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) in ``dir``; ``start()`` waits for /readyz."""

    dir: Path
    controller_manager: bool = True
    api_port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))  # the operator's: an admin
    # the world's own clients, each its own identity so that the request log tells them from the operator's
    agent_token: str = field(default_factory=lambda: secrets.token_hex(16))
    kcm_token: str = field(default_factory=lambda: secrets.token_hex(16))
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _audit: list[dict] = field(default_factory=list, repr=False)
    _audit_ids: set[str] = field(default_factory=set, repr=False)
    _audit_pos: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    def kubeconfig(self, path: Path | None = None, *, token: str | None = None, name: str = "real") -> Path:
        path = path or self.dir / "kubeconfig"
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": name,
               "clusters": [{"name": name, "cluster": {"server": self.url,
                                                       "certificate-authority": str(self.dir / "ca.crt")}}],
               "users": [{"name": name, "user": {"token": token or self.token}}],
               "contexts": [{"name": name, "context": {"cluster": name, "user": name}}]}
        import yaml
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return path

    def start(self, timeout: float = 90.0) -> RealControlPlane:
        paths = {name: binary(name) for name in COMPONENTS if name != "kube-controller-manager"
                 or self.controller_manager}
        self.dir.mkdir(parents=True, exist_ok=True)
        _pki(self.dir)
        (self.dir / "tokens.csv").write_text(
            f'{self.token},{ADMIN_USER},uid-admin,"system:masters"\n'
            f'{self.agent_token},{AGENT_USER},uid-agent,"system:masters"\n'
            f'{self.kcm_token},{KCM_USER},uid-kcm,"system:masters"\n')
        (self.dir / "audit-policy.json").write_text(json.dumps(AUDIT_POLICY))
        etcd_port, peer_port = free_port(), free_port()
        self.api_port = self.api_port or free_port()
        self._spawn("etcd", [str(paths["etcd"]), "--data-dir", str(self.dir / "etcd"), "--name", "default",
                             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                             "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
                             "--unsafe-no-fsync", "--log-level", "error"])
        d = self.dir
        self._spawn("kube-apiserver", [
            str(paths["kube-apiserver"]), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.api_port}",
            f"--tls-cert-file={d / 'apiserver.crt'}", f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={d / 'ca.crt'}", f"--token-auth-file={d / 'tokens.csv'}",
            f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=RBAC", "--allow-privileged=true",
            f"--audit-log-path={self.audit_log}", f"--audit-policy-file={d / 'audit-policy.json'}",
            "--audit-log-format=json", "--endpoint-reconciler-type=none", "--profiling=false", "--v=0",
            # pods/log reaches the node agent on loopback: each Node names 127.0.0.1 as its InternalDNS address
            # (its InternalIP stays the simulated LAN address) and the agent's port as its kubelet endpoint;
            # both ends check the other's certificate
            "--kubelet-preferred-address-types=InternalDNS,InternalIP",
            f"--kubelet-client-certificate={d / 'kubelet-client.crt'}",
            f"--kubelet-client-key={d / 'kubelet-client.key'}", f"--kubelet-certificate-authority={d / 'ca.crt'}"])
        self._wait_ready(timeout)
        if self.controller_manager:
            kc = self.kubeconfig(d / "kcm.kubeconfig", name="kcm", token=self.kcm_token)
            self._spawn("kube-controller-manager", [
                str(paths["kube-controller-manager"]), f"--kubeconfig={kc}", "--leader-elect=false",
                f"--service-account-private-key-file={d / 'sa.key'}", f"--root-ca-file={d / 'ca.crt'}",
                "--secure-port=0", "--use-service-account-credentials=false", "--controllers=*,-nodeipam",
                "--profiling=false", "--v=0"])
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        log.close()

    def _wait_ready(self, timeout: float) -> None:
        import ssl
        import urllib.request
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        deadline = time.monotonic() + timeout
        while True:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    tail = (self.dir / f"{name}.log").read_text(errors="replace")[-600:]
                    raise RuntimeError(f"{name} exited with {p.returncode}: {tail}")
            try:
                req = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"})
                with urllib.request.urlopen(req, context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kube-apiserver not ready within {timeout:.0f} s (see {self.dir}/*.log)")
            time.sleep(0.1)

    def requests(self, *, clients_only: bool = False) -> list[dict]:
        """The audit log as the sandbox's request log shape: time (epoch seconds), method, path, query,
        user_agent, plus user and code. A long-running request (a watch, a log stream) is one entry.

        ``clients_only``: without the world's own traffic (the node agent, the controller-manager, the API
        server's loopback client), as the embedded API's log has only what clients sent. The log is read
        on from where the last call stopped."""
        with contextlib.suppress(FileNotFoundError), self.audit_log.open("rb") as f:
            f.seek(self._audit_pos)
            while (line := f.readline()).endswith(b"\n"):
                self._audit_pos += len(line)
                ev = json.loads(line)
                if ev.get("auditID") in self._audit_ids:  # ResponseComplete after ResponseStarted
                    continue
                self._audit_ids.add(ev.get("auditID"))
                uri = ev.get("requestURI", "")
                path, _, query = uri.partition("?")
                self._audit.append({
                    "time": _epoch(ev.get("requestReceivedTimestamp", "")),
                    "method": _VERBS.get(ev.get("verb"), "GET"), "path": path, "query": query,
                    "user_agent": ev.get("userAgent", ""), "user": (ev.get("user") or {}).get("username", ""),
                    "code": (ev.get("responseStatus") or {}).get("code")})
        return [r for r in self._audit if not clients_only or r["user"] not in WORLD_USERS]

    def stop(self) -> None:
        """Each process by PID, the last started first, each gone before the next is asked: kube-apiserver
        shuts down gracefully only while its etcd still answers (with etcd gone first it hangs until killed)."""
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
