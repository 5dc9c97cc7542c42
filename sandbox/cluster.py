"""The guide's cluster and the network around it, simulated.

Topology (defaults as in the guide): K3s servers dellmini1/3/5 (unit ``k3s``) and agents
dellmini2/lenovomini (unit ``k3s-agent``); kube-dns, Traefik, Gitea in ``gitea-system`` with
the HTTP-only Ingresses of the guide's table, and the three ``gwa`` workloads still on GHCR.
Outside the cluster: Caddy serving the external registry host, Traefik's LoadBalancer IP
serving the realm host, and a LAN DNS that knows those two names (never cluster names).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wizard import k3sversions

from . import containerd, defaults, oci
from .caddy import Caddy
from .ghcr import HOST as GHCR_HOST
from .ghcr import STORAGE_HOST as GHCR_STORAGE_HOST
from .ghcr import Ghcr, GhcrUser
from .gitea import DEFAULT_VERSION as GITEA_VERSION
from .gitea import Gitea, GiteaUser
from .http import HttpRequest, HttpResponse, TLSConfig
from .kinds import BY_KIND, Kind
from .kubelet import Kubelet, PodRun
from .memfs import MemFS
from .nodes import NodeHooks, SimNode, Systemd, load_registries
from .pki import CertKey, make_ca, make_cert, traefik_default_cert
from .store import ApiError, Store, b64, now_micro, now_rfc3339
from .traefik import Traefik
from .vnet import DnsView, Endpoint, Network

K = {k: BY_KIND[k] for k in BY_KIND}
NODE, POD, SERVICE, EVENT, LEASE = (BY_KIND[("v1", "Node")], BY_KIND[("v1", "Pod")], BY_KIND[("v1", "Service")],
                                    BY_KIND[("v1", "Event")], BY_KIND[("coordination.k8s.io/v1", "Lease")])
NAMESPACE, SECRET, INGRESS = (BY_KIND[("v1", "Namespace")], BY_KIND[("v1", "Secret")],
                              BY_KIND[("networking.k8s.io/v1", "Ingress")])
DEPLOYMENT, STATEFULSET = BY_KIND[("apps/v1", "Deployment")], BY_KIND[("apps/v1", "StatefulSet")]

K3S_VERSION = k3sversions.CURRENT  # the default; Options.k3s_version picks another release
REGISTRY_HOST = "registry.example.test"
REALM_HOST = "gitea.k3s.example.test"
LEGACY_HOST = "registry.k3s.example.test"
WEB_HOST = "gitea.example.test"
ORG = "jaybrto"
USERNAME = "registry-user"
READER = "ci-reader"
# Documentation addresses (TEST-NET-1): virtual only, never dialled.
CADDY_IP = "192.0.2.1"
TRAEFIK_LB_IP = "192.0.2.201"
# The internet, as far as the sandbox has one (TEST-NET-3): ghcr.io and its blob storage.
GHCR_IP = "203.0.113.10"
GHCR_STORAGE_IP = "203.0.113.20"
DNS_IP = "10.43.0.10"
GUIDE_IMAGES = {
    "github-workflow-agents": ("StatefulSet", "gwa-runner"),
    "gwa-orchestrator": ("Deployment", "gwa-orchestrator"),
    "gwa-webhook": ("Deployment", "gwa-webhook"),
}
# Registries on the public internet: pulls from them succeed (the sandbox has no internet), except
# ghcr.io, which the sandbox serves itself (ghcr.py): pulls from it are real pulls of its images.
PUBLIC_REGISTRIES = {"docker.io", "ghcr.io", "gcr.io", "quay.io", "registry.k8s.io", "public.ecr.aws"}
GHCR_PRIVATE = {"github-workflow-agents"}  # the others are public packages (anonymous pulls work)
# Whether Gitea starts with the plan's images already stored (copied byte for byte from the GHCR).
# Empty by default, as on a real migration: the Images stage copies them (issue 16).
GITEA_PRELOADED = False


@dataclass
class Options:
    servers: int = 3
    agents: int = 2
    restart_seconds: tuple[float, float] = (2.0, 5.0)
    # a server's start-up (process start → READY), default: restart_seconds; agents take restart_seconds
    server_restart_seconds: tuple[float, float] | None = None
    systemd_version: int = 252  # below 247 `systemctl --timestamp=` is refused, as the real one does
    node_timezone: str = "UTC"  # the nodes' local time zone (systemctl, date and stat print it)
    k3s_version: str = K3S_VERSION  # every node's k3s release: what it generates from registries.yaml
    # The realistic timeline (0 here: instant, as the default world; `--realistic` gives a real cluster's):
    # after the API node's k3s opens its port again, /readyz answers 500 this long (etcd, post-start hooks)
    readyz_lag_seconds: float = 0.0
    # how long a pod takes from its images pulled to its containers running (sandbox and container start)
    pod_start_seconds: tuple[float, float] = (0.0, 0.0)
    # after a node's kubelet starts, the API server cannot reach it this long (k3s's tunnel reconnects):
    # pods/log of a pod there answers 500 "proxy error … code 502"; also while the kubelet is down
    log_gap_seconds: float = 0.0
    # which API server serves the world: the embedded one ("sandbox"), or a real kube-apiserver with etcd and
    # kube-controller-manager ("real", built by scripts/build-real), the simulated nodes then its node agent
    api: str = "sandbox"
    agent_unit_type: str = "notify"  # the agents' k3s-agent unit: notify (install.sh today) or exec (older installs)
    never_returns: set[str] = field(default_factory=set)
    openrc: set[str] = field(default_factory=set)  # nodes that run OpenRC: no systemctl, k3s in /etc/init.d
    api_fault_rate: float = 0.0
    existing_registries: str | None = None
    seed: int = 1
    lease_interval: float = 10.0
    time_scale: float = 1.0  # scales kubelet back-offs (tests use < 1)
    public_port: int = 0
    gitea_token: str | None = None  # registry-user's token (random when not given; tests use a canary)
    gitea_preloaded: bool = GITEA_PRELOADED  # Gitea starts with the plan's images (as copied from GHCR)
    gitea_version: str = GITEA_VERSION  # which Gitea the model behaves as (the realm's derivation)
    gitea_real: bool = False  # the gitea pods forward to a real Gitea process (scripts/build-real gitea)
    ghcr_token: str | None = None  # the GitHub PAT in ghcr-secret and ./ghcr-token (random when not given)
    ghcr_layer_size: int = 256 * 1024  # bytes of the base layer every image shares (large for benchmarks)
    ghcr_url_ttl: float = 300.0  # seconds a storage redirect from ghcr.io stays valid
    # a checkout of the application repository in D/app-repo, named by the plan's ci.repo_dir, so stage
    # "CI and RBAC" writes its build workflow there (the demo shows the whole product)
    app_repo: bool = False
    # the world is kept in D/world.json (sandbox/persist.py): saved after changes and on stop, loaded on start
    persist: bool = False


def node_names(servers: int, agents: int) -> list[tuple[str, str]]:
    """The guide's names for the default 3+2; numbered names beyond that."""
    if (servers, agents) == (3, 2):
        return [("dellmini1", "server"), ("dellmini3", "server"), ("dellmini5", "server"),
                ("dellmini2", "agent"), ("lenovomini", "agent")]
    out = [(f"server{i + 1}" if i else "dellmini1", "server") for i in range(servers)]
    out += [(f"agent{i + 1:04d}" if agents > 9 else f"agent{i + 1}", "agent") for i in range(agents)]
    return out


class Cluster(NodeHooks):
    """Everything simulated, on one event loop."""

    def __init__(self, opts: Options, store: Store | None = None):
        """``store``: where the objects live — the embedded API's own ``Store`` (default), or a ``Mirror`` of a
        real kube-apiserver, whose controller-manager then runs the workloads and judges the nodes' Leases."""
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.pod_rng = random.Random(opts.seed + 1)  # its own stream: restart durations stay as they were
        self.simulates_controllers = store is None
        self.store = Store(seed=opts.seed) if store is None else store
        if self.simulates_controllers:
            defaults.install(self.store)
        self.kubelet_port = 0  # with a real API server: the node agent's kubelet endpoint (pods/log), in every Node
        self.store.listeners.append(self._on_change)
        self.time_scale = opts.time_scale
        self.nodes: dict[str, SimNode] = {}
        self.logs: dict[tuple[str, str, str], str] = {}
        self.image_ids: dict[tuple[str, str], str] = {}
        self.pod_records: dict[str, dict] = {}
        self.dns_ip = DNS_IP
        self.api = None  # set by the sandbox: has set_down()
        self.api_node = "dellmini1"
        self.kubelet = Kubelet(self)
        self.systemd = Systemd(self, self._restart_duration, kubelet_lead=self._kubelet_lead)
        self._pod_ip = 0
        self._reconcile_pending: set[tuple[Kind, str, str]] = set()
        self._tasks: list[asyncio.Task] = []
        self._event_index: dict[tuple, str] = {}
        self.token = opts.gitea_token or secrets.token_hex(20)  # registry-user's Gitea access token
        self.reader_token = secrets.token_hex(20)
        self.ghcr_token = opts.ghcr_token or "ghp_" + secrets.token_hex(18)  # a classic PAT with read:packages
        self.public_port = opts.public_port
        # certificates
        self.lan_ca = make_ca("Example LAN CA")  # the operator's machine trusts this one (ca.crt)
        self.public_root = make_ca("Sandbox Public Root CA")  # the simulated OS trust store
        self.traefik_cert = traefik_default_cert()
        self.caddy_cert: CertKey | None = None
        self.pinned_certs: dict[str, CertKey] = {}  # a saved world's leaf certificates (persist.restore_identity)
        self.restore_from: tuple[dict, Path] | None = None  # a saved world and its folder: build() loads it
        self.network = Network(system_roots=[self.public_root])
        self.network.lookup_hook = self._lookup
        self.gitea: Gitea | None = None
        self.ghcr: Ghcr | None = None
        self.ghcr_cert: CertKey | None = None
        self.ghcr_storage_cert: CertKey | None = None
        self.traefik: Traefik | None = None
        self.caddy: Caddy | None = None

    # ------------------------------------------------------------------ hosts
    def host(self, name: str) -> str:
        """A public host name with the world's HTTPS port, as clients write it."""
        return f"{name}:{self.public_port}" if self.public_port not in (0, 443) else name

    @property
    def root_url(self) -> str:
        return f"https://{self.host(REALM_HOST)}/"

    def lan_hosts(self) -> dict[str, str]:
        return {REGISTRY_HOST: CADDY_IP, REALM_HOST: TRAEFIK_LB_IP, LEGACY_HOST: CADDY_IP,
                WEB_HOST: TRAEFIK_LB_IP}

    @staticmethod
    def internet_hosts() -> dict[str, str]:
        """The public names the LAN DNS forwards to the (simulated) internet."""
        return {GHCR_HOST: GHCR_IP, GHCR_STORAGE_HOST: GHCR_STORAGE_IP}

    def node_dns(self, node: SimNode) -> DnsView:
        """A node's resolver: the LAN DNS and /etc/hosts; no cluster names (containerd runs on the host)."""
        hosts = dict(self.lan_hosts()) | self.internet_hosts()
        hosts.update({n.name: n.internal_ip for n in (node,)})
        return DnsView(hosts=hosts)

    def cluster_dns(self, name: str) -> str | None:
        """CoreDNS: Service names, then forwarding to the LAN DNS."""
        name = name.rstrip(".")
        if name.endswith(".svc.cluster.local"):
            parts = name.split(".")
            if len(parts) == 5:
                svc = self.store.get(SERVICE, parts[1], parts[0])
                if svc and svc["spec"].get("clusterIP") not in (None, "", "None"):
                    return svc["spec"]["clusterIP"]
            return None
        return (self.lan_hosts() | self.internet_hosts()).get(name)

    def _lookup(self, ip: str, port: int) -> Endpoint | None:
        """Service ClusterIPs and pod IPs on the virtual network."""
        for svc in self.store.kinds[SERVICE].objects.values():
            if svc["spec"].get("clusterIP") != ip:
                continue
            if svc["metadata"]["namespace"] == "kube-system" and svc["metadata"]["name"] == "traefik":
                return self.traefik.endpoint("websecure" if port == 443 else "web")
            for p in svc["spec"].get("ports") or []:
                if p.get("port") == port:
                    target = p.get("targetPort", port)
                    for run in self._endpoints_of(svc):
                        ep = run.servers.get(target if isinstance(target, int) else port)
                        if ep:
                            return ep
            return None
        for run in self.kubelet.runs.values():
            if run.ip == ip:
                return run.servers.get(port)
        return None

    def _endpoints_of(self, svc: dict) -> list[PodRun]:
        sel = svc["spec"].get("selector") or {}
        if not sel:
            return []
        out = []
        for run in self.kubelet.runs.values():
            pod = run.pod
            if not pod or pod["metadata"]["namespace"] != svc["metadata"]["namespace"]:
                continue
            labels = pod["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in sel.items()) and run.servers:
                out.append(run)
        return out

    async def service_fetch(self, namespace: str, name: str, port, req: HttpRequest) -> HttpResponse:
        """Traefik's and Caddy's way to a backend Service."""
        svc = self.store.get(SERVICE, namespace, name)
        if svc is None:
            return HttpResponse.text(503, "Service Unavailable")
        port_num = port
        if isinstance(port, str):
            port_num = next((p["port"] for p in svc["spec"].get("ports") or [] if p.get("name") == port), 0)
        url = req.url.split("://", 1)[1]
        path = "/" + url.split("/", 1)[1] if "/" in url else "/"
        inner = HttpRequest(req.method, f"http://{svc['spec']['clusterIP']}:{port_num}{path}", req.headers, req.body)
        from .http import NetError
        try:
            return await self.network.fetch(inner, DnsView(hosts={}), TLSConfig(verify=False))
        except NetError:
            return HttpResponse.text(502, "Bad Gateway")

    # ------------------------------------------------------------------ building the world
    def build(self) -> None:
        """Create the nodes, the network and the guide's starting objects."""
        opts = self.opts
        pinned = self.pinned_certs
        self.caddy_cert = pinned.get("caddy_cert") or make_cert(REGISTRY_HOST, [REGISTRY_HOST, LEGACY_HOST],
                                                                issuer=self.lan_ca)
        if opts.gitea_real:
            self.gitea = self._real_gitea()
        else:
            self.gitea = Gitea(self.root_url, [
                GiteaUser(USERNAME, self.token, can_push={ORG}),
                GiteaUser(READER, self.reader_token, can_push=set(), can_pull={ORG}),
            ], version=opts.gitea_version)
        self.ghcr = Ghcr([GhcrUser(ORG, self.ghcr_token, can_read={ORG})],
                         public={f"{ORG}/{name}" for name in GUIDE_IMAGES if name not in GHCR_PRIVATE},
                         url_ttl=opts.ghcr_url_ttl)
        self.ghcr.load(ORG, oci.default_images(ORG, layer_size=opts.ghcr_layer_size))
        if opts.gitea_preloaded:
            for image in GUIDE_IMAGES:
                repo = f"{ORG}/{image}"
                digest = self.ghcr.digest(repo, "latest")
                self.gitea.store(repo, "latest", self.ghcr.repos[repo].closure(digest))
        self.ghcr_cert = pinned.get("ghcr_cert") or make_cert(GHCR_HOST, [GHCR_HOST], issuer=self.public_root)
        self.ghcr_storage_cert = pinned.get("ghcr_storage_cert") or make_cert(
            GHCR_STORAGE_HOST, [GHCR_STORAGE_HOST, "*.githubusercontent.com"], issuer=self.public_root)
        self.network.add(GHCR_IP, 443, self.ghcr_endpoint())
        self.network.add(GHCR_STORAGE_IP, 443, self.ghcr_storage_endpoint())
        self.traefik = Traefik(
            ingresses=lambda: self.store.kinds[INGRESS].objects.values(),
            secret=lambda ns, name: self.store.get(SECRET, ns, name),
            backend=self.service_fetch, default_cert=self.traefik_cert)
        traefik_web = self.traefik.endpoint("web")

        async def to_traefik_web(req: HttpRequest) -> HttpResponse:
            url = req.url.split("://", 1)[1]
            path = "/" + url.split("/", 1)[1] if "/" in url else "/"
            inner = HttpRequest(req.method, f"http://{TRAEFIK_LB_IP}:80{path}", req.headers, req.body)
            return await traefik_web.handler(inner)

        self.caddy = Caddy({REGISTRY_HOST: (self.caddy_cert, to_traefik_web),
                            LEGACY_HOST: (self.caddy_cert, to_traefik_web)})
        port = self.public_port or 443
        self.network.add(CADDY_IP, port, self.caddy.endpoint())
        self.network.add(TRAEFIK_LB_IP, port, self.traefik.endpoint("websecure"))
        self.network.add(TRAEFIK_LB_IP, 80, traefik_web)

        now = time.time()
        names = node_names(opts.servers, opts.agents)
        self.api_node = names[0][0]
        for i, (name, role) in enumerate(names):
            fs = MemFS()
            boot = now - 86400 - self.rng.random() * 3600
            node = SimNode(name=name, role=role, internal_ip=_node_ip(i), fs=fs, boot_time=boot,
                           unit="k3s" if role == "server" else "k3s-agent",
                           never_returns=name in opts.never_returns, timezone=opts.node_timezone,
                           systemd_version=opts.systemd_version, k3s_version=opts.k3s_version,
                           unit_type=opts.agent_unit_type if role == "agent" else "notify",
                           init="openrc" if name in opts.openrc else "systemd")
            node.active_enter = boot + 30 + self.rng.random() * 60
            node.kubelet_started = node.active_enter
            fs.mkdir("/etc/rancher/k3s", parents=True)
            fs.write("/etc/hostname", (name + "\n").encode())
            if name in opts.openrc:  # the init script the k3s installer writes on OpenRC
                fs.mkdir("/etc/init.d", parents=True)
                fs.write("/etc/init.d/" + node.unit, b"#!/sbin/openrc-run\n", mode=0o755)
            fs.write("/etc/timezone", (opts.node_timezone + "\n").encode())
            fs.mkdir("/etc/ssl/certs", parents=True)
            fs.write("/etc/ssl/certs/ca-certificates.crt", self.network.system_roots_pem())
            if opts.existing_registries is not None:
                fs.write(containerd.REGISTRIES_PATH, opts.existing_registries.encode(), mode=0o600)
                # installed before the node's last start: it is what k3s has loaded
                fs._files[containerd.REGISTRIES_PATH].mtime = node.active_enter - 60
            load_registries(node)
            for path, entry in list(fs._files.items()):
                if path.startswith(containerd.CONTAINERD_DIR):
                    entry.mtime = node.active_enter
            node.last_lease = now
            self.nodes[name] = node
        self._built_at = now
        if self.restore_from is not None:  # the saved world, instead of the guide's starting objects
            from . import persist
            persist.restore_world(self, *self.restore_from)
        elif self.simulates_controllers:  # a Mirror is seeded through its API server: seed_real()
            gen, created = self._seed(now), None
            with contextlib.suppress(StopIteration):
                while True:
                    kind, obj, ns = gen.send(created)
                    created = self.store.create(kind, obj, ns, manager="k3s", validate=False, keep_status=True)

    async def seed_real(self, timeout: float = 60.0) -> None:
        """The guide's starting objects, created through the real API server (the ones it makes itself —
        the built-in namespaces, the ``kubernetes`` Service, a ``default`` ServiceAccount — are taken as they
        are); returns once the mirror has every one of them."""
        gen, created, keys = self._seed(self._built_at), None, []
        with contextlib.suppress(StopIteration):
            while True:
                kind, obj, ns = gen.send(created)
                keys.append((kind, ns, obj["metadata"]["name"]))
                created = self.store.get(*keys[-1])  # made by the API server itself (the mirror has listed)
                if created is not None:
                    continue
                created = await self.store.acreate(kind, obj, ns, manager="k3s", exist_ok=True)
                status = obj.get("status") or {}
                if kind.has_status and any(k not in (created.get("status") or {}) for k in status):
                    created = await self.store.aput(kind, {**created, "status": status}, subresource="status",
                                                    manager="k3s")
        async with asyncio.timeout(timeout):
            while any(self.store.get(*key) is None for key in keys):
                await asyncio.sleep(0.02)

    def ghcr_endpoint(self) -> Endpoint:
        return Endpoint("ghcr.io", "https", self.ghcr.handle, cert_for=lambda sni: self.ghcr_cert)

    def ghcr_storage_endpoint(self) -> Endpoint:
        return Endpoint("ghcr storage", "https", self.ghcr.storage, cert_for=lambda sni: self.ghcr_storage_cert)

    def registries(self) -> dict:
        """What each registry holds: ``{"ghcr": {"<repo>:<tag>": digest}, "gitea": {…}}``."""
        return {"ghcr": self.ghcr.tag_digests(), "gitea": self.gitea.tag_digests()}

    def _seed(self, now: float):
        """The guide's starting objects, in order, as ``(kind, object, namespace)``; each created object (with
        its uid) is sent back in, so a Lease can name its Node as owner."""
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease", "gitea-system"):
            yield NAMESPACE, {"metadata": {"name": ns}}, ""
        for name, node in self.nodes.items():
            created = yield NODE, self._node_object(node, now), ""
            yield (LEASE, {"metadata": {"name": name, "namespace": "kube-node-lease",
                                        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                                             "uid": created["metadata"]["uid"]}]},
                           "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                                    "renewTime": now_micro(now)}}, "kube-node-lease")
        yield (SERVICE, {"metadata": {"name": "kubernetes", "labels": {"component": "apiserver",
                                                                      "provider": "kubernetes"}},
                         "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443,
                                                                         "targetPort": 6443}]}}, "default")
        yield (SERVICE, {"metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns",
                                                                    "kubernetes.io/name": "CoreDNS"}},
                         "spec": {"clusterIP": DNS_IP, "selector": {"k8s-app": "kube-dns"},
                                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                                            {"name": "metrics", "port": 9153, "protocol": "TCP"}]}}, "kube-system")
        yield (SERVICE, {"metadata": {"name": "traefik", "labels": {"app.kubernetes.io/name": "traefik",
                                                                   "app.kubernetes.io/instance": "traefik-kube-system"}},
                         "spec": {"type": "LoadBalancer", "selector": {"app.kubernetes.io/name": "traefik"},
                                  "ports": [{"name": "web", "port": 80, "targetPort": "web"},
                                            {"name": "websecure", "port": 443, "targetPort": "websecure"}]},
                         "status": {"loadBalancer": {"ingress": [{"ip": TRAEFIK_LB_IP, "ipMode": "VIP"}]}}},
               "kube-system")
        yield self._deployment("kube-system", "coredns", "rancher/mirrored-coredns-coredns:1.12.3",
                               {"k8s-app": "kube-dns"})
        yield self._deployment("kube-system", "traefik", "rancher/mirrored-library-traefik:3.3.6",
                               {"app.kubernetes.io/name": "traefik"})
        # Gitea
        yield (SERVICE, {"metadata": {"name": "gitea-http", "labels": {"app.kubernetes.io/name": "gitea"}},
                         "spec": {"selector": {"app.kubernetes.io/name": "gitea"},
                                  "ports": [{"name": "http", "port": 3000, "targetPort": 3000}]}}, "gitea-system")
        yield self._statefulset("gitea-system", "gitea", "gitea/gitea:1.22.3", {"app.kubernetes.io/name": "gitea"})
        for name, host in (("gitea-http", WEB_HOST), ("gitea-registry", REGISTRY_HOST), ("gitea-k3s-alias", REALM_HOST)):
            yield (INGRESS, {"metadata": {"name": name, "annotations": {
                "traefik.ingress.kubernetes.io/router.entrypoints": "web"}},
                "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                    "service": {"name": "gitea-http", "port": {"number": 3000}}}}]}}]}}, "gitea-system")
        # the guide's workloads, still on GHCR
        ghcr_auth = {"auths": {"ghcr.io": {"username": ORG, "password": self.ghcr_token,
                                           "auth": b64(f"{ORG}:{self.ghcr_token}")}}}
        yield (SECRET, {"metadata": {"name": "ghcr-secret"}, "type": "kubernetes.io/dockerconfigjson",
                        "data": {".dockerconfigjson": b64(json.dumps(ghcr_auth))}}, "default")
        yield (K[("v1", "ServiceAccount")], {"metadata": {"name": "default"}}, "default")
        yield (K[("v1", "ServiceAccount")], {"metadata": {"name": "gwa-actions-runner"}}, "default")
        role = K[("rbac.authorization.k8s.io/v1", "Role")]
        yield (role, {"metadata": {"name": "gwa-actions-runner"}, "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]}, "default")
        yield (K[("rbac.authorization.k8s.io/v1", "RoleBinding")], {
            "metadata": {"name": "gwa-actions-runner"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gwa-actions-runner"},
            "subjects": [{"kind": "ServiceAccount", "name": "gwa-actions-runner", "namespace": "default"}]}, "default")
        for image, (kind, name) in GUIDE_IMAGES.items():
            pod_extra = {"imagePullSecrets": [{"name": "ghcr-secret"}]}
            if kind == "StatefulSet":
                pod_extra["serviceAccountName"] = "gwa-actions-runner"
                yield self._statefulset("default", name, f"ghcr.io/{ORG}/{image}:latest", {"app": name}, pod_extra)
            else:
                yield self._deployment("default", name, f"ghcr.io/{ORG}/{image}:latest", {"app": name}, pod_extra)

    def _template(self, labels: dict, image: str, extra: dict | None) -> dict:
        name = labels.get("app") or next(iter(labels.values()))
        spec = {"containers": [{"name": name.split("-")[-1] if name.startswith("gwa") else name, "image": image}]}
        spec.update(extra or {})
        return {"metadata": {"labels": dict(labels)}, "spec": spec}

    def _deployment(self, ns, name, image, labels, extra=None):
        return DEPLOYMENT, {"metadata": {"name": name, "labels": dict(labels)},
                            "spec": {"replicas": 1, "selector": {"matchLabels": dict(labels)},
                                     "template": self._template(labels, image, extra)}}, ns

    def _statefulset(self, ns, name, image, labels, extra=None):
        return STATEFULSET, {"metadata": {"name": name, "labels": dict(labels)},
                             "spec": {"replicas": 1, "serviceName": name, "selector": {"matchLabels": dict(labels)},
                                      "template": self._template(labels, image, extra)}}, ns

    def _node_object(self, node: SimNode, now: float) -> dict:
        labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
                  "node.kubernetes.io/instance-type": "k3s"}
        if node.is_server:
            labels.update({"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/etcd": "true",
                           "node-role.kubernetes.io/master": "true"})
        annotations = {"k3s.io/hostname": node.name, "k3s.io/internal-ip": node.internal_ip,
                       "k3s.io/node-args": json.dumps(["server"] if node.is_server else ["agent"]),
                       "node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
        t = now_rfc3339(node.boot_time + 30)
        hb = now_rfc3339(now)
        cond = lambda type_, status, reason, msg: {"type": type_, "status": status, "reason": reason,  # noqa: E731
                                                    "message": msg, "lastHeartbeatTime": hb, "lastTransitionTime": t}
        addresses = [{"type": "InternalIP", "address": node.internal_ip}, {"type": "Hostname", "address": node.name}]
        if self.kubelet_port:  # a real API server fetches pods/log from the node agent's endpoint on loopback
            addresses.append({"type": "InternalDNS", "address": "127.0.0.1"})
        return {"metadata": {"name": node.name, "labels": labels, "annotations": annotations},
                "spec": {"podCIDR": f"10.42.{len(self.nodes) % 256}.0/24", "providerID": f"k3s://{node.name}"},
                "status": {
                    "addresses": addresses,
                    "capacity": {"cpu": "4", "memory": "16215340Ki", "pods": "110", "ephemeral-storage": "239363800Ki"},
                    "allocatable": {"cpu": "4", "memory": "16215340Ki", "pods": "110",
                                    "ephemeral-storage": "232848938137"},
                    "conditions": [
                        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                        cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port or 10250}},
                    "nodeInfo": {"architecture": "amd64", "bootID": hashlib.md5(node.name.encode()).hexdigest(),
                                 "containerRuntimeVersion": "containerd://" + containerd.version_of(node.k3s_version).containerd,
                                 "kernelVersion": "6.8.0-51-generic",
                                 "kubeProxyVersion": node.k3s_version, "kubeletVersion": node.k3s_version,
                                 "machineID": hashlib.sha1(node.name.encode()).hexdigest()[:32],
                                 "operatingSystem": "linux", "osImage": "Ubuntu 24.04.1 LTS",
                                 "systemUUID": hashlib.md5(node.name.encode()).hexdigest()}}}

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._heartbeats()))
        if not self.simulates_controllers:  # the real controller-manager runs workloads and the node lifecycle
            return
        self._tasks.append(loop.create_task(self._node_lifecycle()))
        if self.restore_from is not None:  # the world comes back: kubelets renew, an unfinished restart finishes
            now = time.time()
            for node in self.nodes.values():
                if node.kubelet_up:
                    self._renew_lease(node, now)
                if node.state == "activating" and node.restarts and node.restarts[-1].get("end") is None:
                    node.restarts.pop()  # the restart asked before the world stopped, from its start again
                    node.state = "active"
                    self.systemd.restart(node)
        for kind in (DEPLOYMENT, STATEFULSET):
            for obj in list(self.store.kinds[kind].objects.values()):
                self._queue_reconcile(kind, obj)

    def _real_gitea(self):
        """Start a real Gitea with the world's ROOT_URL, org and users; its tokens become the sandbox's."""
        import tempfile

        from .realgitea import RealGitea, RealGiteaBackend
        # PUBLIC_URL_DETECTION=never: the realm is ROOT_URL, as the guide's setup needs behind Caddy → Traefik web
        # (with 1.26's default "auto" it would be http://<registry host>/v2/token there: see --gitea-version)
        real = RealGitea(Path(tempfile.mkdtemp(prefix="ghcr2gitea-gitea-")), root_url=self.root_url, org=ORG,
                         writer=USERNAME, reader=READER, public_url_detection="never")
        try:
            real.start()
        except BaseException:
            real.wipe()
            raise
        self.token, self.reader_token = real.users[USERNAME].token, real.users[READER].token
        return RealGiteaBackend(real, [f"{ORG}/{name}" for name in GUIDE_IMAGES])

    async def stop(self) -> None:
        close = getattr(self.gitea, "close", None)
        if close is not None:  # the real Gitea: its HTTP session, then the process, by PID
            await close()
            self.gitea.real.wipe()
        for t in [*self._tasks, *self.kubelet.finishing]:
            t.cancel()
        for run in list(self.kubelet.runs.values()):
            if run.task:
                run.task.cancel()
        for node in self.nodes.values():
            if node.restart_task:
                node.restart_task.cancel()
        await asyncio.sleep(0)

    def _restart_duration(self, node: SimNode) -> float:
        lo, hi = (self.opts.server_restart_seconds or self.opts.restart_seconds) if node.is_server \
            else self.opts.restart_seconds
        return lo if hi <= lo else self.rng.uniform(lo, hi)

    def pod_start_delay(self) -> float:
        """Seconds between a pod's images being there and its containers running (random per pod)."""
        lo, hi = self.opts.pod_start_seconds
        return lo if hi <= lo else self.pod_rng.uniform(lo, hi)

    @staticmethod
    def _kubelet_lead(node: SimNode, total: float) -> float:
        """How long before READY the new kubelet starts: a server starts it early, in parallel with etcd and
        the API server (k3s pkg/cli/server); an agent starts it just before it signals READY (pkg/agent/run.go)."""
        return 0.75 * total if node.is_server else min(0.25 * total, 0.5)

    async def k3s_stopped(self, node: SimNode) -> None:
        self.kubelet.kubelet_changed(node)
        if node.name == self.api_node and self.api is not None:
            await self.api.set_down(True)

    async def k3s_started(self, node: SimNode) -> None:
        if node.name == self.api_node and self.api is not None:
            await self.api.set_down(False)

    async def kubelet_started(self, node: SimNode) -> None:
        now = time.time()
        # a new kubelet process has an empty event correlator: its events are new objects, not count bumps
        for key in [k for k in self._event_index if k[0] == node.name]:
            del self._event_index[key]
        self.event({"kind": "Node", "name": node.name, "uid": node.name, "apiVersion": "v1"}, "Starting",
                   "Starting kubelet.", component="kubelet", host=node.name, namespace="default")
        self._renew_lease(node, now)
        self._set_ready(node, "True", "KubeletReady", "kubelet is posting ready status", now)
        self.kubelet.kubelet_changed(node)

    async def _heartbeats(self) -> None:
        """Kubelets renew their node Lease every lease_interval, spread evenly."""
        interval = self.opts.lease_interval
        n = max(len(self.nodes), 1)
        order = list(self.nodes.values())
        due = {node.name: time.time() + interval * i / n for i, node in enumerate(order)}
        while True:
            await asyncio.sleep(min(0.5, interval / 4))
            now = time.time()
            for node in order:
                if due[node.name] <= now:
                    due[node.name] = now + interval
                    if node.kubelet_up:
                        self._renew_lease(node, now)

    def _renew_lease(self, node: SimNode, now: float) -> None:
        node.last_lease = now
        lease = self.store.get(LEASE, "kube-node-lease", node.name)
        if lease is None:
            return
        new = copy.deepcopy(lease)
        new["spec"]["renewTime"] = now_micro(now)
        self.store.update(LEASE, new, "kube-node-lease", node.name, manager="k3s", validate=False)

    def _set_ready(self, node: SimNode, status: str, reason: str, message: str, now: float) -> None:
        obj = self.store.get(NODE, "", node.name)
        if obj is None:
            return
        new = copy.deepcopy(obj)
        for c in new["status"]["conditions"]:
            if c["type"] == "Ready":
                if c["status"] != status:
                    c["lastTransitionTime"] = now_rfc3339(now)
                c.update(status=status, reason=reason, message=message, lastHeartbeatTime=now_rfc3339(now))
            elif status != "Unknown":
                c["lastHeartbeatTime"] = now_rfc3339(now)
                if c["status"] == "Unknown":
                    c.update(status="False", lastTransitionTime=now_rfc3339(now))
            else:
                c.update(status="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.",
                         lastTransitionTime=now_rfc3339(now))
        taints = [t for t in new["spec"].get("taints") or [] if not t["key"].startswith("node.kubernetes.io/unreach")]
        if status == "Unknown":
            taints.append({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule",
                           "timeAdded": now_rfc3339(now)})
        # conditions are status (the node lifecycle controller and kubelet write /status); taints are spec, and
        # with a real API server its controller-manager's
        self.store.update(NODE, new, "", node.name, subresource="status", manager="k3s", validate=False)
        if self.simulates_controllers and taints != (obj["spec"].get("taints") or []):
            spec_new = copy.deepcopy(self.store.get(NODE, "", node.name))
            if taints:
                spec_new["spec"]["taints"] = taints
            else:
                spec_new["spec"].pop("taints", None)
            self.store.update(NODE, spec_new, "", node.name, manager="node-lifecycle-controller", validate=False)

    async def _node_lifecycle(self) -> None:
        """The node lifecycle controller, once a second."""
        while True:
            await asyncio.sleep(1.0)
            self.mark_unknown(time.time())

    def mark_unknown(self, now: float) -> list[str]:
        """No Lease renewal for the grace period of the node's Kubernetes version → Ready Unknown; the names."""
        marked = []
        for node in self.nodes.values():
            version = k3sversions.parse(node.k3s_version)
            grace = version.node_monitor_grace if version else 50.0
            if now - node.last_lease > grace and not node.kubelet_up:
                obj = self.store.get(NODE, "", node.name)
                ready = next((c for c in obj["status"]["conditions"] if c["type"] == "Ready"), {})
                if ready.get("status") != "Unknown":
                    self._set_ready(node, "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.", now)
                    marked.append(node.name)
        return marked

    # ------------------------------------------------------------------ pulls
    async def pull(self, node: SimNode, image: str, secrets_: dict) -> containerd.PullResult:
        ref = containerd.parse_image(image)
        if ref.host in PUBLIC_REGISTRIES and ref.host != GHCR_HOST:
            digest = "sha256:" + hashlib.sha256(str(ref).encode()).hexdigest()
            return containerd.PullResult(True, image, digest=digest)
        view = self.node_dns(node)

        async def fetch(req: HttpRequest, tls: TLSConfig) -> HttpResponse:
            return await self.network.fetch(req, view, tls)

        def read_file(path: str) -> bytes | None:
            return node.fs.read(path) if node.fs.isfile(path) else None
        try:
            return await containerd.pull(image, node.loaded_registries, fetch, read_file=read_file,
                                         pull_secret_auths=secrets_ or None, k3s_version=node.k3s_version)
        except containerd.RegistriesError as e:
            return containerd.PullResult(False, image, error=str(e))

    # ------------------------------------------------------------------ pods
    def allocate_pod_ip(self, node: SimNode) -> str:
        self._pod_ip += 1
        idx = list(self.nodes).index(node.name) if len(self.nodes) < 256 else hash(node.name) % 256
        return f"10.42.{idx}.{self._pod_ip % 250 + 2}"

    def update_pod_status(self, ns: str, name: str, uid: str, mutate: Callable[[dict], None]) -> None:
        pod = self.store.get(POD, ns, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        new = copy.deepcopy(pod)
        st = new.setdefault("status", {})
        mutate(st)
        for k in [k for k, v in st.items() if v is None]:
            del st[k]
        with contextlib.suppress(ApiError):
            self.store.update(POD, new, ns, name, subresource="status", manager="k3s", validate=False)

    def append_log(self, ns: str, name: str, container: str, text: str) -> None:
        key = (ns, name, container)
        self.logs[key] = self.logs.get(key, "") + text

    def get_log(self, ns: str, name: str, container: str | None) -> str | None:
        return self.logs.get((ns, name, container or ""))

    def kubelet_log(self, ns: str, name: str, container: str) -> str | None:
        """What the node's kubelet answers for a container's log (the agent's endpoint, with a real API server):
        its text, "" once the pod runs if the container wrote nothing, None while the pod is still Pending."""
        text = self.get_log(ns, name, container)
        if text is None and ((self.store.get(POD, ns, name) or {}).get("status") or {}).get("phase") not in (
                None, "Pending"):
            return ""
        return text

    def log_unreachable(self, ns: str, name: str, container: str) -> str | None:
        """Why the API server cannot reach the kubelet of the pod's node for its log now (None: it can): the
        kubelet is down, or started less than ``log_gap_seconds`` ago — k3s's words, from its tunnel."""
        if self.opts.log_gap_seconds <= 0:  # the default world: logs are served whatever the kubelet does
            return None
        pod = self.store.get(POD, ns, name)
        node = self.nodes.get(((pod or {}).get("spec") or {}).get("nodeName") or "")
        if node is None or node.kubelet_up and time.time() - node.kubelet_started >= self.opts.log_gap_seconds:
            return None
        ip = node.internal_ip
        return (f'Get "https://{ip}:10250/containerLogs/{ns}/{name}/{container}": proxy error from 127.0.0.1:6443 '
                f"while dialing {ip}:10250, code 502: 502 Bad Gateway")

    def pod_done(self, ns: str, name: str) -> bool:
        pod = self.store.get(POD, ns, name)
        return pod is None or pod.get("status", {}).get("phase") in ("Succeeded", "Failed")

    def event(self, ref: dict, reason: str, message: str, *, type_: str = "Normal", component: str = "kubelet",
              host: str | None = None, namespace: str | None = None) -> None:
        ns = namespace or ref.get("namespace") or "default"
        key = (ref.get("uid"), reason, message)
        now = time.time()
        existing = self._event_index.get(key)
        if existing:
            ev = self.store.get(EVENT, ns, existing)
            if ev is not None:
                new = copy.deepcopy(ev)
                new["count"] = ev.get("count", 1) + 1
                new["lastTimestamp"] = now_rfc3339(now)
                self.store.update(EVENT, new, ns, existing, manager=component, validate=False)
                return
        name = f"{ref.get('name')}.{int(now * 1e9):x}{self.rng.randrange(16 ** 4):04x}"[:253]
        obj = {"metadata": {"name": name}, "involvedObject": ref, "reason": reason, "message": message,
               "source": {"component": component, **({"host": host} if host else {})},
               "firstTimestamp": now_rfc3339(now), "lastTimestamp": now_rfc3339(now), "count": 1, "type": type_,
               "eventTime": None, "reportingComponent": component, "reportingInstance": host or ""}
        with contextlib.suppress(ApiError):
            self.store.create(EVENT, obj, ns, manager=component, validate=False)
            self._event_index[key] = name

    # ------------------------------------------------------------------ controllers
    def _on_change(self, etype: str, kind: Kind, old: dict | None, new: dict | None) -> None:
        if kind is POD:
            obj = new if new is not None else old
            md = obj["metadata"]
            rec = self.pod_records.setdefault(md["uid"], {"namespace": md["namespace"], "name": md["name"]})
            rec.update(node=obj["spec"].get("nodeName"), phase=obj.get("status", {}).get("phase", "Pending"),
                       labels=md.get("labels") or {}, deleted=etype == "DELETED")
            if etype == "DELETED":
                for _key in [k for k in self.logs if k[0] == md["namespace"] and k[1] == md["name"]]:
                    pass  # logs of deleted pods stay readable in state for debugging
            if etype != "DELETED" and not obj["spec"].get("nodeName"):
                asyncio.get_running_loop().call_soon(self._schedule, md["namespace"], md["name"])
            self.kubelet.pod_changed(etype, old, new)
            if not self.simulates_controllers:
                return
            for ref in md.get("ownerReferences") or []:
                owner_kind = {"Deployment": DEPLOYMENT, "StatefulSet": STATEFULSET}.get(ref.get("kind"))
                if owner_kind:
                    self._queue_reconcile(owner_kind, {"metadata": {"namespace": md["namespace"],
                                                                    "name": ref["name"]}})
        elif kind in (DEPLOYMENT, STATEFULSET) and etype != "DELETED" and self.simulates_controllers:
            self._queue_reconcile(kind, new)

    def _queue_reconcile(self, kind: Kind, obj: dict) -> None:
        key = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self._reconcile_pending:
            return
        self._reconcile_pending.add(key)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon(self._reconcile, key)

    def _reconcile(self, key) -> None:
        self._reconcile_pending.discard(key)
        kind, ns, name = key
        obj = self.store.get(kind, ns, name)
        if obj is None:
            return
        with contextlib.suppress(ApiError):
            if kind is DEPLOYMENT:
                self._reconcile_deployment(obj)
            else:
                self._reconcile_statefulset(obj)

    def _owned_pods(self, obj: dict) -> list[dict]:
        uid = obj["metadata"]["uid"]
        return [p for p in self.store.list(POD, obj["metadata"]["namespace"])
                if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]

    @staticmethod
    def _template_hash(obj: dict) -> str:
        return hashlib.sha256(json.dumps(obj["spec"]["template"], sort_keys=True).encode()).hexdigest()[:10]

    def _new_pod(self, owner: dict, kind: Kind, name: str, labels: dict) -> None:
        tmpl = copy.deepcopy(owner["spec"]["template"])
        md = tmpl.get("metadata") or {}
        md.pop("creationTimestamp", None)
        md["name"] = name
        md["labels"] = {**(md.get("labels") or {}), **labels}
        md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": kind.kind, "name": owner["metadata"]["name"],
                                  "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        pod = {"metadata": md, "spec": tmpl["spec"]}
        self.store.create(POD, pod, owner["metadata"]["namespace"], manager="k3s", validate=False)

    @staticmethod
    def _pod_ready(p: dict) -> bool:
        return any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions") or [])

    def _reconcile_deployment(self, d: dict) -> None:
        h = self._template_hash(d)
        replicas = d["spec"].get("replicas", 1)
        pods = self._owned_pods(d)
        new = [p for p in pods if p["metadata"].get("labels", {}).get("pod-template-hash") == h]
        old = [p for p in pods if p not in new]
        for _ in range(replicas - len(new)):
            self._new_pod(d, DEPLOYMENT, f"{d['metadata']['name']}-{h}-{''.join(self.rng.choices('bcdfghjklmnpqrstvwxz2456789', k=5))}",
                          {"pod-template-hash": h})
        for p in new[replicas:]:
            self.store.delete(POD, p["metadata"]["namespace"], p["metadata"]["name"])
        new = new[:replicas] if len(new) >= replicas else new
        ready_new = [p for p in new if self._pod_ready(p)]
        if len(ready_new) >= replicas:
            for p in old:
                self.store.delete(POD, p["metadata"]["namespace"], p["metadata"]["name"])
            old = []
        pods = old + new
        ready = [p for p in pods if self._pod_ready(p)]
        done = len(ready_new) >= replicas and not old
        status = {"observedGeneration": d["metadata"].get("generation", 1), "replicas": len(pods),
                  "updatedReplicas": len(new), "readyReplicas": len(ready), "availableReplicas": len(ready),
                  "conditions": [
                      {"type": "Available", "status": "True" if len(ready) >= replicas else "False",
                       "reason": "MinimumReplicasAvailable" if len(ready) >= replicas else "MinimumReplicasUnavailable",
                       "message": "Deployment has minimum availability." if len(ready) >= replicas else
                       "Deployment does not have minimum availability."},
                      {"type": "Progressing", "status": "True",
                       "reason": "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                       "message": f'ReplicaSet "{d["metadata"]["name"]}-{h}" '
                                  + ("has successfully progressed." if done else "is progressing.")}]}
        if len(pods) - len(ready):
            status["unavailableReplicas"] = len(pods) - len(ready)
        self._set_status(DEPLOYMENT, d, status)

    def _reconcile_statefulset(self, s: dict) -> None:
        name = s["metadata"]["name"]
        rev = f"{name}-{self._template_hash(s)}"
        replicas = s["spec"].get("replicas", 1)
        pods = {p["metadata"]["name"]: p for p in self._owned_pods(s)}
        for i in range(replicas):
            pname = f"{name}-{i}"
            if pname not in pods:
                if all(self._pod_ready(pods[f"{name}-{j}"]) for j in range(i) if f"{name}-{j}" in pods):
                    self._new_pod(s, STATEFULSET, pname, {"controller-revision-hash": rev,
                                                          "statefulset.kubernetes.io/pod-name": pname,
                                                          "apps.kubernetes.io/pod-index": str(i)})
                break
        # RollingUpdate: replace the highest-ordinal outdated pod once all others are ready
        outdated = sorted((p for p in pods.values() if p["metadata"]["labels"].get("controller-revision-hash") != rev),
                          key=lambda p: p["metadata"]["name"], reverse=True)
        if outdated and all(self._pod_ready(p) for p in pods.values() if p is not outdated[0]):
            p = outdated[0]
            self.store.delete(POD, p["metadata"]["namespace"], p["metadata"]["name"])
            pods.pop(p["metadata"]["name"])
        pods_l = list(pods.values())
        updated = [p for p in pods_l if p["metadata"]["labels"].get("controller-revision-hash") == rev]
        ready = [p for p in pods_l if self._pod_ready(p)]
        current_rev = (s.get("status") or {}).get("currentRevision") or rev
        if len(updated) == replicas and len(ready) == replicas:
            current_rev = rev
        status = {"observedGeneration": s["metadata"].get("generation", 1), "replicas": len(pods_l),
                  "readyReplicas": len(ready), "currentReplicas": len(pods_l) - len(updated) if current_rev != rev
                  else len(pods_l), "updatedReplicas": len(updated), "availableReplicas": len(ready),
                  "currentRevision": current_rev, "updateRevision": rev, "collisionCount": 0}
        self._set_status(STATEFULSET, s, status)

    def _set_status(self, kind: Kind, obj: dict, status: dict) -> None:
        if obj.get("status") == status:
            return
        new = copy.deepcopy(obj)
        new["status"] = status
        self.store.update(kind, new, obj["metadata"]["namespace"], obj["metadata"]["name"], subresource="status",
                          manager="k3s", validate=False)

    def _schedule(self, ns: str, name: str) -> None:
        pod = self.store.get(POD, ns, name)
        if pod is None or pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return
        candidates = [n for n in self.nodes.values() if n.kubelet_up]
        if not candidates:
            return
        node = candidates[self.rng.randrange(len(candidates))] if len(candidates) > 1 else candidates[0]
        try:
            self.store.bind(ns, name, node.name, pod["metadata"]["uid"])
        except ApiError:
            return  # bound meanwhile, or gone
        self.event({"kind": "Pod", "namespace": ns, "name": name, "uid": pod["metadata"]["uid"], "apiVersion": "v1"},
                   "Scheduled", f"Successfully assigned {ns}/{name} to {node.name}", component="default-scheduler")

    # ------------------------------------------------------------------ state
    def state(self, requests: list[dict]) -> dict:
        nodes = {}
        for name, n in self.nodes.items():
            obj = self.store.get(NODE, "", name)
            ready = next((c["status"] for c in obj["status"]["conditions"] if c["type"] == "Ready"), "Unknown")
            nodes[name] = {"role": n.role, "unit": n.unit, "ready": ready == "True", "unit_state": n.state,
                           "active_enter": n.active_enter, "files": n.fs.files(),
                           "loaded_registries": n.loaded_registries, "restarts": [dict(r) for r in n.restarts]}
        return {"nodes": nodes, "pods": list(self.pod_records.values()), "requests": requests,
                "registries": self.registries()}


def _node_ip(i: int) -> str:
    return f"192.0.2.{11 + i}" if i < 180 else f"100.64.{i // 250}.{i % 250 + 1}"


