"""Run the simulated cluster on its own thread and loop, and write what clients need to reach it.

``Sandbox(dir, opts).start()`` serves the Kubernetes API on https://127.0.0.1:<port> and the
public hosts (external registry, realm) on one loopback HTTPS port, then writes into ``dir``:
``kubeconfig``, ``plan.yaml``, ``token`` (0600), ``ca.crt`` (the LAN CA the operator trusts)
and ``resolve`` (host:port:addr lines, as ``--resolve`` takes them); for the GHCR it serves as
``ghcr.io:PORT``: ``ghcr-token`` (0600, the GitHub PAT), ``ghcr-resolve`` and ``public-ca.crt``
(the root its certificate chains to, the stand-in for the public web PKI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path

import yaml
from aiohttp import web

from . import cluster as C
from .apiserver import ApiServer
from .pki import make_ca, make_cert
from .worldserver import WorldServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_private(path: Path, data: str | bytes) -> None:
    """Write a file readable by its owner only, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class Sandbox:
    def __init__(self, directory: str | Path, opts: C.Options | None = None, *, bookmark_interval: float = 5.0):
        self.dir = Path(directory)
        self.opts = opts or C.Options()
        self.bookmark_interval = bookmark_interval
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.cluster: C.Cluster | None = None
        self.api: ApiServer | None = None
        self.world: WorldServer | None = None
        # with Options.api == "real": the real control plane, the node agent's mirror of it and its kubelet
        # endpoint, and where the state JSON is served (the real API server serves no /_sandbox/)
        self.plane = None
        self.mirror = None
        self.kubelet_endpoint = None
        self.state_runner: web.AppRunner | None = None
        self.state_url = ""
        self.api_token = secrets.token_hex(16)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped = threading.Event()
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._saver: asyncio.Task | None = None  # Options.persist: keeps D/world.json up to date

    # ------------------------------------------------------------------ paths
    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def plan(self) -> Path:
        return self.dir / "plan.yaml"

    @property
    def app_repo(self) -> Path:
        """The application repository's checkout (only with ``Options.app_repo``)."""
        return self.dir / APP_REPO

    @property
    def token_file(self) -> Path:
        return self.dir / "token"

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api.port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 60.0) -> Sandbox:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.thread = threading.Thread(target=self._thread, name="sandbox", daemon=True)
        self.thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("sandbox did not start in time")
        if self._error:
            raise self._error
        return self

    def _thread(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            with contextlib.suppress(BaseException):  # whatever did start stops (processes by PID)
                self.loop.run_until_complete(self._shutdown())
            self.loop.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self._shutdown())
            self.loop.close()
            self._stopped.set()

    async def _start(self) -> None:
        opts = self.opts
        world = None
        if opts.persist:
            if opts.api == "real" or opts.gitea_real:
                raise RuntimeError("a kept world (persist) is the sandbox's own: not with --api real or --gitea real")
            from . import persist
            world = persist.load(self.dir, opts)
            if world is not None:
                opts.public_port = world["public_port"]  # every host name in the plan and on the nodes has it
        if not opts.public_port:
            opts.public_port = free_port()
        if opts.api == "real":
            await self._start_real()
        else:
            self.cluster = C.Cluster(opts)
            if world is not None:
                persist.restore_identity(self.cluster, world)
                self.cluster.restore_from = (world, self.dir)
            self.cluster.build()
        cl = self.cluster
        # the public HTTPS hosts on one loopback port
        routes = {C.REGISTRY_HOST: cl.caddy.endpoint(), C.LEGACY_HOST: cl.caddy.endpoint(),
                  C.REALM_HOST: cl.traefik.endpoint("websecure"), C.WEB_HOST: cl.traefik.endpoint("websecure"),
                  C.GHCR_HOST: cl.ghcr_endpoint(), C.GHCR_STORAGE_HOST: cl.ghcr_storage_endpoint()}
        self.world = WorldServer(lambda sni: routes.get(sni, routes[C.REALM_HOST]))
        await self.world.start("127.0.0.1", opts.public_port)
        if opts.api == "real":
            cl.start()
            self._write_files((self.plane.dir / "ca.crt").read_bytes())
            return
        # the API, with its own CA as K3s has
        self._tmp = tempfile.TemporaryDirectory(prefix="ghcr2gitea-sandbox-")
        ca = make_ca("k3s-server-ca@sandbox")
        cert = make_cert("k3s", ["localhost", "kubernetes", "kubernetes.default"], ["127.0.0.1"], issuer=ca)
        crt, key = Path(self._tmp.name) / "api.crt", Path(self._tmp.name) / "api.key"
        crt.write_bytes(cert.chain_pem)
        _write_private(key, cert.key_pem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(crt, key)
        self.api = ApiServer(cl.store, token=self.api_token, ssl_context=ctx, logs=cl.get_log,
                             pod_done=cl.pod_done, log_unreachable=cl.log_unreachable,
                             bookmark_interval=self.bookmark_interval, seed=opts.seed,
                             extra_routes=self._sandbox_routes())
        self.api.fault_rate = opts.api_fault_rate
        self.api.readyz_lag = opts.readyz_lag_seconds
        cl.api = self.api
        await self.api.start()
        self.state_url = f"{self.api_url}/_sandbox/state"
        cl.start()
        self._write_files(ca.cert_pem)
        if opts.persist:
            self._saver = self.loop.create_task(self._keep_world())

    async def _keep_world(self) -> None:
        """Save the world after it changes (checked every persist.SAVE_EVERY seconds): a killed demo loses at most
        that much."""
        from . import persist
        last = None
        while True:
            now = persist.signature(self.cluster)
            if now != last:
                persist.save(self.cluster, self.dir)
                last = now
            await asyncio.sleep(persist.SAVE_EVERY)

    def _sandbox_routes(self) -> dict:
        return {"/_sandbox/state": self._state, "/_sandbox/compact": self._compact, "/_sandbox/faults": self._faults,
                "/_sandbox/registries": self._registries}

    async def _start_real(self) -> None:
        """The world on a real kube-apiserver: etcd, the API server and the controller-manager as processes;
        the simulated nodes as its node agent (a mirror by list+watch, a kubelet endpoint for pods/log); the
        kubeconfig's server a front proxy that refuses connections while k3s restarts on the API node."""
        from . import realapi
        from .frontproxy import FrontProxy
        from .kinds import KINDS
        from .kubeletapi import KubeletEndpoint
        from .mirror import Mirror
        self._tmp = tempfile.TemporaryDirectory(prefix="ghcr2gitea-real-api-")
        self.plane = plane = realapi.RealControlPlane(Path(self._tmp.name) / "plane")
        await asyncio.to_thread(plane.start, 120.0)
        ca = str(plane.dir / "ca.crt")
        self.mirror = await Mirror(plane.url, plane.agent_token, ca, KINDS).start(timeout=60)
        self.cluster = cl = C.Cluster(self.opts, store=self.mirror)
        self.kubelet_endpoint = await KubeletEndpoint(
            cl.kubelet_log, lambda ns, pod: not cl.pod_done(ns, pod), str(plane.dir / "apiserver.crt"),
            str(plane.dir / "apiserver.key"), ca).start()
        cl.kubelet_port = self.kubelet_endpoint.port
        cl.build()
        await cl.seed_real()
        self.api = await FrontProxy(plane.api_port).start()
        cl.api = self.api
        self.api_token = plane.token
        app = web.Application()
        for path, handler in self._sandbox_routes().items():
            app.router.add_route("*", path, handler)
        self.state_runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self.state_runner.setup()
        site = web.TCPSite(self.state_runner, "127.0.0.1", 0)
        await site.start()
        self.state_url = f"http://127.0.0.1:{self.state_runner.addresses[0][1]}/_sandbox/state"

    def requests(self) -> list[dict]:
        """What clients sent the API, oldest first (in real mode: from the API server's audit log)."""
        return self.plane.requests(clients_only=True) if self.plane is not None else self.api.requests

    async def _state(self, request: web.Request) -> web.Response:
        state = {**self.cluster.state(self.requests()), "api": {"up_windows": self.api.up_windows}}
        if self.mirror is not None:
            state["api"]["mode"] = "real"
            state["api"]["agent_errors"] = list(self.mirror.errors)  # writes the real API server refused
        return web.Response(body=json.dumps(state).encode(), content_type="application/json")

    async def _compact(self, request: web.Request) -> web.Response:
        if self.plane is not None:
            return web.json_response({"error": "compaction is a sandbox-API endpoint"}, status=404)
        self.cluster.store.compact()
        return web.json_response({"compacted": self.cluster.store.rv})

    async def _faults(self, request: web.Request) -> web.Response:
        """POST {"api_fault_rate": R, "never_returns": [node…]}: change fault injection at run time."""
        if request.method == "POST":
            body = await request.json()
            if "api_fault_rate" in body:
                if self.plane is not None:
                    return web.json_response({"error": "api_fault_rate is a sandbox-API fault"}, status=400)
                self.api.fault_rate = float(body["api_fault_rate"])
            for name in body.get("never_returns", []):
                if name in self.cluster.nodes:
                    self.cluster.nodes[name].never_returns = True
        return web.json_response({"api_fault_rate": getattr(self.api, "fault_rate", 0.0),
                                  "never_returns": sorted(n.name for n in self.cluster.nodes.values()
                                                          if n.never_returns)})

    async def _registries(self, request: web.Request) -> web.Response:
        """POST {"ghcr_throttle": N, "ghcr_retry_after": S, "ghcr_url_ttl": S, "gitea_duplicate_key": bool}."""
        cl = self.cluster
        if request.method == "POST":
            body = await request.json()
            if "ghcr_throttle" in body:
                cl.ghcr.throttle(int(body["ghcr_throttle"]), int(body.get("ghcr_retry_after", cl.ghcr.retry_after)))
            if "ghcr_url_ttl" in body:
                cl.ghcr.url_ttl = float(body["ghcr_url_ttl"])
            if "gitea_duplicate_key" in body:
                cl.gitea.duplicate_key = bool(body["gitea_duplicate_key"])
        return web.json_response({"ghcr_throttle": cl.ghcr.throttled, "ghcr_retry_after": cl.ghcr.retry_after,
                                  "ghcr_url_ttl": cl.ghcr.url_ttl, "gitea_duplicate_key": cl.gitea.duplicate_key,
                                  **cl.registries()})

    async def _shutdown(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
            if self.cluster is not None and self._error is None:  # a clean stop: the world as it is now
                from . import persist
                persist.save(self.cluster, self.dir)
        if self.cluster:
            await self.cluster.stop()
        if self.api:
            await self.api.stop()
        if self.world:
            await self.world.stop()
        if self.state_runner:
            await self.state_runner.cleanup()
        if self.mirror:
            await self.mirror.close()
        if self.kubelet_endpoint:
            await self.kubelet_endpoint.stop()
        if self.plane:
            await asyncio.to_thread(self.plane.wipe)  # its processes, by PID
        if self._tmp:
            self._tmp.cleanup()

    def stop(self, timeout: float = 30.0) -> None:
        if self.loop and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._stopped.wait(timeout)
        if self.thread:
            self.thread.join(timeout)

    def call(self, fn, *args, timeout: float = 30.0):
        """Run ``fn(*args)`` on the sandbox loop (a coroutine function is awaited) and return its result."""
        async def run():
            res = fn(*args)
            if asyncio.iscoroutine(res):
                res = await res
            return res
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ files for clients
    @property
    def ghcr_url(self) -> str:
        """Where this machine reaches the sandbox's GHCR (all public hosts share the world's port)."""
        return f"https://{C.GHCR_HOST}:{self.opts.public_port}"

    def ghcr_resolve_entries(self) -> list[str]:
        port = self.opts.public_port
        return [f"{h}:{port}:127.0.0.1" for h in (C.GHCR_HOST, C.GHCR_STORAGE_HOST)]

    def resolve_entries(self) -> list[str]:
        port = self.opts.public_port
        return [f"{h}:{port}:127.0.0.1" for h in (C.REGISTRY_HOST, C.REALM_HOST, C.LEGACY_HOST, C.WEB_HOST)]

    def _write_files(self, api_ca_pem: bytes) -> None:
        import base64
        cl = self.cluster
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "sandbox", "preferences": {},
            "clusters": [{"name": "sandbox", "cluster": {
                "server": self.api_url,
                "certificate-authority-data": base64.b64encode(api_ca_pem).decode()}}],
            "users": [{"name": "sandbox-admin", "user": {"token": self.api_token}}],
            "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": "sandbox-admin"}}],
        }
        _write_private(self.kubeconfig, yaml.safe_dump(kubeconfig, sort_keys=False))
        _write_private(self.token_file, cl.token + "\n")
        _write_private(self.dir / "reader-token", cl.reader_token + "\n")
        self.ca_file.write_bytes(cl.lan_ca.cert_pem)
        (self.dir / "resolve").write_text("\n".join(self.resolve_entries()) + "\n")
        _write_private(self.dir / "ghcr-token", cl.ghcr_token + "\n")
        (self.dir / "ghcr-resolve").write_text("\n".join(self.ghcr_resolve_entries()) + "\n")
        (self.dir / "public-ca.crt").write_bytes(cl.public_root.cert_pem)
        # where the state JSON is served: the contract both API modes keep (the embedded API serves it itself)
        (self.dir / "state-url").write_text(self.state_url + "\n")
        if self.opts.app_repo:
            write_app_repo(self.app_repo)
        self.plan.write_text(sandbox_plan(self))


APP_REPO = "app-repo"
# everything a sandbox writes in its folder (its client files, the app checkout, a kept world)
FOLDER_FILES = ("kubeconfig", "plan.yaml", "token", "reader-token", "ca.crt", "resolve", "ghcr-token", "ghcr-resolve",
                "public-ca.crt", "state-url", APP_REPO, "world.json", "world.json.tmp", "world-blobs")


def wipe(directory: Path, also: tuple[str, ...] = ()) -> None:
    """Remove what a sandbox wrote in ``directory`` (and the names in ``also``); any other file stays."""
    import shutil
    for name in (*FOLDER_FILES, *also):
        path = Path(directory) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
APP_DOCKERFILE = """\
# The application the guide's images are built from (a stand-in: the sandbox's images are generated).
FROM alpine:3.20
COPY . /app
CMD ["/bin/sh", "-c", "exec sleep infinity"]
"""


def write_app_repo(path: Path) -> None:
    """A minimal checkout of the application repository: a Dockerfile at its root and a README.

    Files already there are kept (a rerun of the demo in the same folder keeps the workflow it wrote)."""
    path.mkdir(parents=True, exist_ok=True)
    for name, text in (("Dockerfile", APP_DOCKERFILE),
                       ("README.md", "# app\n\nThe sandbox's application repository: stage \"CI and RBAC\" writes "
                                     ".github/workflows/build-image.yml here.\n")):
        if not (path / name).exists():
            (path / name).write_text(text)


def sandbox_plan(sb: Sandbox) -> str:
    """The migration plan that matches this sandbox (docs/plan.md describes the format)."""
    cl = sb.cluster
    registry = cl.host(C.REGISTRY_HOST)
    plan = {
        "version": 1,
        "cluster": {"context": "sandbox"},
        "gitea": {
            "internal_service": "gitea-http.gitea-system.svc.cluster.local:3000",
            "root_url": cl.root_url,
            "username": C.USERNAME,
            "org": C.ORG,
        },
        "registry": {
            "host": registry,
            "legacy_hosts": [cl.host(C.LEGACY_HOST)],
            "ca_file": str(sb.ca_file),
        },
        "images": [{"source": f"ghcr.io/{C.ORG}/{name}", "target": f"{registry}/{C.ORG}/{name}"}
                   for name in C.GUIDE_IMAGES],
        "ghcr": {"url": sb.ghcr_url, "ca_file": str(sb.dir / "public-ca.crt")},
        "network": {"resolve": sb.resolve_entries() + sb.ghcr_resolve_entries()},
    }
    if sb.opts.app_repo:  # relative: from the plan file's folder, as docs/plan.md says
        plan["ci"] = {"repo_dir": APP_REPO}
    header = ("# ghcr2gitea migration plan, written by `ghcr2gitea sandbox` for the sandbox in this folder.\n"
              "# The token is not here: it is in ./token (GITEA_TOKEN or --token-file).\n")
    return header + yaml.safe_dump(plan, sort_keys=False)


def serve(directory: str, opts: C.Options) -> int:
    """The ``ghcr2gitea sandbox`` command: serve until SIGINT/SIGTERM."""
    import signal
    import sys

    from .realapi import ComponentMissing
    sb = Sandbox(directory, opts)
    t0 = time.monotonic()
    stop = threading.Event()
    # before starting: a real API world's processes are stopped by PID even when the signal comes mid-start
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        sb.start(timeout=300.0 if opts.api == "real" else 60.0)
    except (ComponentMissing, RuntimeError, OSError, TimeoutError) as e:
        sb.stop()
        print(f"ghcr2gitea sandbox: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    print(f"sandbox ready: {directory}", flush=True)
    server = "a real kube-apiserver" if opts.api == "real" else "the sandbox's API"
    print(f"  API {sb.api_url} ({server})  nodes {len(sb.cluster.nodes)}  started in {time.monotonic() - t0:.2f} s",
          flush=True)
    print(f"  export KUBECONFIG={sb.kubeconfig}", flush=True)
    while not stop.wait(0.5):
        pass
    sb.stop()
    return 0
