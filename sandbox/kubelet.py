"""Pods on simulated nodes: scheduling, image pulls, containers that run, logs and events.

What a container does depends on what it is:
- ``nsenter -t 1 … -- sh -c SCRIPT`` in a privileged, hostPID pod: SCRIPT runs on the node
  (its filesystem, systemctl, crictl);
- ``sh -c SCRIPT`` (or ``/bin/sh``/``ash``): SCRIPT runs in the pod, with its volumes, its
  /etc/hosts and ``curl``/``wget`` seeing the pod's network;
- an ``nginx`` image with a conf.d config: the auth proxy, served on the pod's IP;
- a Gitea image: the Gitea HTTP service on port 3000;
- anything else: runs until deleted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import posixpath
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import containerd, nginx
from .curl import make_curl, make_wget
from .http import HttpRequest, HttpResponse, TLSConfig
from .kinds import BY_KIND
from .memfs import FSError, MemFS
from .nodes import SimNode, crictl
from .shell import ShellContext, run_script
from .store import ApiError, now_rfc3339
from .vnet import DnsView, Endpoint

if TYPE_CHECKING:
    from .cluster import Cluster

POD = BY_KIND[("v1", "Pod")]
SERVICE = BY_KIND[("v1", "Service")]
CONFIGMAP = BY_KIND[("v1", "ConfigMap")]
SECRET = BY_KIND[("v1", "Secret")]
SHELLS = {"sh", "/bin/sh", "ash", "/bin/ash", "bash", "/bin/bash", "/bin/busybox"}
PULL_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0)


def container_command(c: dict) -> list[str]:
    return list(c.get("command") or []) + list(c.get("args") or [])


def nsenter_script(argv: list[str]) -> str | None:
    """SCRIPT of ``nsenter -t 1 [-m -u -i -n -p …] -- sh -c SCRIPT``, else None."""
    if not argv or posixpath.basename(argv[0]) != "nsenter" or "--" not in argv:
        return None
    opts = argv[1:argv.index("--")]
    rest = argv[argv.index("--") + 1:]
    target = None
    for i, o in enumerate(opts):
        if o in ("-t", "--target") and i + 1 < len(opts):
            target = opts[i + 1]
        elif o.startswith("--target="):
            target = o.split("=", 1)[1]
    if target != "1" or "-m" not in opts and "--mount" not in opts and not any(o.startswith("-m") for o in opts):
        return None
    return shell_script(rest)


def shell_script(argv: list[str]) -> str | None:
    if len(argv) >= 3 and argv[0] in SHELLS and argv[1] == "-c":
        return argv[2]
    if len(argv) >= 4 and argv[0] == "/bin/busybox" and argv[1] == "sh" and argv[2] == "-c":
        return argv[3]
    return None



def node_proc(node) -> dict:
    """The node's live /proc files: /proc/uptime is seconds since boot (the kernel truncates to 1/100 s)."""
    def uptime() -> bytes:
        up = max(time.time() - node.boot_time, 0.0)
        return f"{int(up * 100) / 100:.2f} {int(up * 300) / 100:.2f}\n".encode()
    return {"/proc/uptime": uptime}

class PodRun:
    """One pod's life on its node."""

    def __init__(self, kubelet: Kubelet, pod: dict):
        self.k = kubelet
        self.ns = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.node: SimNode = kubelet.c.nodes[pod["spec"]["nodeName"]]
        self.task: asyncio.Task | None = None
        self.ip = kubelet.c.allocate_pod_ip(self.node)
        self.empty_dirs: dict[str, dict[str, bytes]] = {}
        self.servers: dict[int, Endpoint] = {}
        self.done = False

    @property
    def pod(self) -> dict | None:
        p = self.k.c.store.get(POD, self.ns, self.name)
        return p if p and p["metadata"]["uid"] == self.uid else None

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except ApiError:
            pass  # the pod went away under us

    async def _run(self) -> None:
        pod = self.pod
        if pod is None:
            return
        spec = pod["spec"]
        init, main = spec.get("initContainers") or [], spec["containers"]
        await self.k.wait_kubelet(self.node)
        now = now_rfc3339()
        await self.update_status(lambda st: st.update({
            "hostIP": self.node.internal_ip, "hostIPs": [{"ip": self.node.internal_ip}], "podIP": self.ip,
            "podIPs": [{"ip": self.ip}], "startTime": now,
            "conditions": _conditions(initialized=not init, ready=False, scheduled=True),
            "initContainerStatuses": [_waiting(c, "PodInitializing") for c in init] or None,
            "containerStatuses": [_waiting(c, "PodInitializing" if init else "ContainerCreating") for c in main]}))
        secrets = self.pull_secrets(spec)
        for c in init + main:
            if not await self.pull(c, secrets, is_init=c in init):
                return
        await asyncio.sleep(self.k.c.pod_start_delay())  # ContainerCreating: the sandbox, then the containers
        if self.pod is None:
            return
        for i, c in enumerate(init):
            rc = await self.run_container(c, init=True)
            statuses = [_terminated(cc, rc if j == i else 0) if j <= i else _waiting(cc, "PodInitializing")
                        for j, cc in enumerate(init)]
            await self.update_status(lambda st, s=statuses: st.update({"initContainerStatuses": s}))
            if rc != 0:
                await self.finish(phase="Failed", main_statuses=[_waiting(cc, "PodInitializing") for cc in main],
                                  reason="Init:Error")
                return
        await self.update_status(lambda st: st.update({"conditions": _conditions(True, False, True)}))
        results = await asyncio.gather(*(self.run_container(c) for c in main))
        if all(r is None for r in results):
            return  # long-running containers: the pod stays Running
        restart = spec.get("restartPolicy", "Always")
        codes = [r if r is not None else 0 for r in results]
        if restart == "Always":
            await self.finish(phase="Running", main_statuses=[
                _crashloop(c, rc) for c, rc in zip(main, codes, strict=True)], reason=None, ready=False)
            return
        await self.finish(phase="Succeeded" if all(rc == 0 for rc in codes) else "Failed",
                          main_statuses=[_terminated(c, rc) for c, rc in zip(main, codes, strict=True)])

    # ------------------------------------------------------------------ status
    async def update_status(self, mutate: Callable[[dict], None]) -> None:
        await self.k.wait_kubelet(self.node)
        self.k.c.update_pod_status(self.ns, self.name, self.uid, mutate)

    async def finish(self, *, phase: str, main_statuses: list[dict], reason: str | None = None,
                     ready: bool = False) -> None:
        self.done = phase in ("Succeeded", "Failed")

        def mutate(st: dict) -> None:
            st["phase"] = phase
            st["containerStatuses"] = main_statuses
            st["conditions"] = _conditions(True, ready, True)
            if reason:
                st["reason"] = reason
        await self.update_status(mutate)

    # ------------------------------------------------------------------ images
    def pull_secrets(self, spec: dict) -> dict[str, tuple[str, str]]:
        """Registry credentials from imagePullSecrets, as the kubelet hands them to containerd."""
        auths: dict[str, tuple[str, str]] = {}
        for ref in spec.get("imagePullSecrets") or []:
            sec = self.k.c.store.get(SECRET, self.ns, ref.get("name", ""))
            if not sec or sec.get("type") != "kubernetes.io/dockerconfigjson":
                continue
            try:
                cfg = json.loads(base64.b64decode(sec["data"][".dockerconfigjson"]))
            except (KeyError, ValueError):
                continue
            for host, entry in (cfg.get("auths") or {}).items():
                user, pw = entry.get("username"), entry.get("password")
                if (not user or not pw) and entry.get("auth"):
                    with contextlib.suppress(ValueError):
                        user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
                if user and pw:
                    host = re.sub(r"^https?://", "", host).rstrip("/").removesuffix("/v2").removesuffix("/v1")
                    auths[host] = (user, pw)
        return auths

    async def pull(self, c: dict, secrets: dict, *, is_init: bool) -> bool:
        image = c["image"]
        attempt = 0
        while True:
            self.k.c.event(self.pod_ref(c), "Pulling", f'Pulling image "{image}"', component="kubelet",
                           host=self.node.name)
            result = await self.k.c.pull(self.node, image, secrets)
            if self.pod is None:
                return False
            if result.ok:
                self.k.c.event(self.pod_ref(c), "Pulled", f'Successfully pulled image "{image}" in 212ms '
                               f"(212ms including waiting). Image size: 4123456 bytes.", component="kubelet",
                               host=self.node.name)
                self.k.c.image_ids[(self.uid, c["name"])] = f"{_repo(image)}@{result.digest}"
                return True
            msg = containerd.kubelet_message(result)
            self.k.c.event(self.pod_ref(c), "Failed", msg, type_="Warning", component="kubelet", host=self.node.name)
            self.k.c.event(self.pod_ref(c), "Failed", "Error: ErrImagePull", type_="Warning", component="kubelet",
                           host=self.node.name)
            await self.set_waiting(c, "ErrImagePull", msg, is_init)
            await asyncio.sleep(PULL_BACKOFF[min(attempt, len(PULL_BACKOFF) - 1)] * self.k.c.time_scale)
            if self.pod is None:
                return False
            self.k.c.event(self.pod_ref(c), "BackOff", f'Back-off pulling image "{image}"', type_="Normal",
                           component="kubelet", host=self.node.name)
            self.k.c.event(self.pod_ref(c), "Failed", "Error: ImagePullBackOff", type_="Warning",
                           component="kubelet", host=self.node.name)
            await self.set_waiting(c, "ImagePullBackOff", f'Back-off pulling image "{image}": ErrImagePull: {msg}',
                                   is_init)
            await asyncio.sleep(PULL_BACKOFF[min(attempt, len(PULL_BACKOFF) - 1)] * self.k.c.time_scale)
            attempt += 1

    async def set_waiting(self, c: dict, reason: str, message: str, is_init: bool) -> None:
        key = "initContainerStatuses" if is_init else "containerStatuses"

        def mutate(st: dict) -> None:
            st[key] = [dict(_waiting(cs_c, reason, message)) if cs_c["name"] == c["name"] else cs
                       for cs_c, cs in zip(self._containers(is_init), st.get(key) or [], strict=False)]
        await self.update_status(mutate)

    def _containers(self, is_init: bool) -> list[dict]:
        pod = self.pod or {"spec": {"containers": []}}
        return pod["spec"].get("initContainers" if is_init else "containers") or []

    def pod_ref(self, c: dict | None = None) -> dict:
        ref = {"kind": "Pod", "namespace": self.ns, "name": self.name, "uid": self.uid, "apiVersion": "v1"}
        if c is not None:
            ref["fieldPath"] = f"spec.containers{{{c['name']}}}"
        return ref

    # ------------------------------------------------------------------ containers
    async def run_container(self, c: dict, init: bool = False) -> int | None:
        """Run one container; return its exit code, or None for a container that keeps running."""
        pod = self.pod
        if pod is None:
            return 137
        cluster = self.k.c
        cluster.event(self.pod_ref(c), "Created", f"Created container {c['name']}", component="kubelet",
                      host=self.node.name)
        cluster.event(self.pod_ref(c), "Started", f"Started container {c['name']}", component="kubelet",
                      host=self.node.name)
        argv = container_command(c)
        spec = pod["spec"]
        privileged = bool((c.get("securityContext") or {}).get("privileged"))
        script = nsenter_script(argv)
        if script is not None:
            if not (privileged and spec.get("hostPID")):
                return self.log_exit(c, 1, "nsenter: cannot open /proc/1/ns/ipc: Permission denied\n")
            ctx = ShellContext(fs=self.node.fs, hostname=self.node.name, env=_env(c, {"HOME": "/root"}, self.env_lookup),
                               commands=self.k.node_commands(self.node), proc=node_proc(self.node))
            result = await run_script(script, ctx)
            return self.log_exit(c, result.rc, result.stdout + result.stderr)
        if argv and posixpath.basename(argv[0]) == "nsenter":
            return self.log_exit(c, 1, "nsenter: sandbox supports only `nsenter -t 1 -m … -- sh -c SCRIPT`\n")
        script = shell_script(argv)
        if script is not None:
            fs = self.container_fs(c, spec)
            ctx = ShellContext(fs=fs, hostname=self.name[:63],
                               env=_env(c, {"HOME": "/root", "PATH": "/usr/bin:/bin"}, self.env_lookup),
                               commands=self.k.pod_commands(self))
            result = await run_script(script, ctx)
            self.save_empty_dirs(c, fs)
            return self.log_exit(c, result.rc, result.stdout + result.stderr)
        if argv and argv[0] not in SHELLS and "/" not in (argv[0] or "") and argv[0] in ("echo", "true", "false"):
            ctx = ShellContext(fs=self.container_fs(c, spec), hostname=self.name, env=_env(c, {}))
            result = await run_script(" ".join(_quote(a) for a in argv), ctx)
            return self.log_exit(c, result.rc, result.stdout + result.stderr)
        image = c["image"]
        if nginx.is_nginx(image, argv):
            fs = self.container_fs(c, spec)
            proxy = nginx.Nginx.from_fs(fs, self.k.pod_fetch(self), dns_view=self.k.dns_view(self),
                                        cluster_dns_ip=cluster.dns_ip)
            if proxy.error:
                cluster.append_log(self.ns, self.name, c["name"], proxy.error + "\n")
                await self.crashloop(c, 1)
                return None
            for port, endpoint in proxy.endpoints(f"nginx {self.ns}/{self.name}").items():
                self.servers[port] = endpoint
            cluster.append_log(self.ns, self.name, c["name"], proxy.startup_log())
            await self.mark_ready(c)
            return None
        if "gitea" in image.split("/")[-1]:
            self.servers[3000] = Endpoint(f"gitea {self.ns}/{self.name}", "http", cluster.gitea.handle)
            cluster.append_log(self.ns, self.name, c["name"], "Starting new Web server: tcp:0.0.0.0:3000\n")
        await self.mark_ready(c)
        return None

    def env_lookup(self, kind: str, name: str, key: str) -> str | None:
        if kind == "Secret":
            sec = self.k.c.store.get(SECRET, self.ns, name) or {}
            raw = (sec.get("data") or {}).get(key)
            return base64.b64decode(raw).decode(errors="replace") if raw is not None else None
        cm = self.k.c.store.get(CONFIGMAP, self.ns, name) or {}
        return (cm.get("data") or {}).get(key)

    def log_exit(self, c: dict, rc: int, text: str) -> int:
        self.k.c.append_log(self.ns, self.name, c["name"], text)
        return rc

    async def mark_ready(self, c: dict) -> None:
        image_id = self.k.c.image_ids.get((self.uid, c["name"]), "")

        def mutate(st: dict) -> None:
            statuses = st.get("containerStatuses") or []
            new = []
            for cs in statuses:
                if cs["name"] == c["name"]:
                    cs = _running(c, image_id)
                new.append(cs)
            st["containerStatuses"] = new
            all_ready = all(cs.get("ready") for cs in new)
            st["phase"] = "Running"
            st["conditions"] = _conditions(True, all_ready, True)
        await self.update_status(mutate)

    async def crashloop(self, c: dict, rc: int) -> None:
        def mutate(st: dict) -> None:
            st["phase"] = "Running"
            st["containerStatuses"] = [_crashloop(c, rc) if cs["name"] == c["name"] else cs
                                       for cs in st.get("containerStatuses") or []]
            st["conditions"] = _conditions(True, False, True)
        await self.update_status(mutate)
        self.k.c.event(self.pod_ref(c), "BackOff", f"Back-off restarting failed container {c['name']} in pod "
                       f"{self.name}_{self.ns}({self.uid})", type_="Warning", component="kubelet", host=self.node.name)

    # ------------------------------------------------------------------ the pod's filesystem
    def container_fs(self, c: dict, spec: dict) -> MemFS:
        c_ = self.k.c
        fs = MemFS()
        for d in ("/etc", "/etc/ssl/certs", "/tmp", "/root", "/var/run/secrets/kubernetes.io/serviceaccount"):
            fs.mkdir(d, parents=True)
        fs.write("/etc/ssl/certs/ca-certificates.crt", c_.network.system_roots_pem())
        hosts = ["127.0.0.1\tlocalhost", f"{self.ip}\t{self.name}"]
        for alias in spec.get("hostAliases") or []:
            hosts.append(f"{alias.get('ip')}\t" + " ".join(alias.get("hostnames") or []))
        fs.write("/etc/hosts", ("\n".join(hosts) + "\n").encode())
        fs.write("/etc/resolv.conf", f"search {self.ns}.svc.cluster.local svc.cluster.local cluster.local\n"
                 f"nameserver {c_.dns_ip}\noptions ndots:5\n".encode())
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            v = volumes.get(m.get("name"))
            if v is None:
                continue
            files = self.volume_files(v)
            target = m["mountPath"]
            if m.get("subPath"):
                data = files.get(m["subPath"])
                if data is not None:
                    fs.mkdir(posixpath.dirname(target), parents=True)
                    fs.write(target, data)
                continue
            fs.mkdir(target, parents=True)
            for rel, data in files.items():
                path = posixpath.join(target, rel)
                fs.mkdir(posixpath.dirname(path), parents=True)
                fs.write(path, data)
        return fs

    def volume_files(self, v: dict) -> dict[str, bytes]:
        store = self.k.c.store
        if "configMap" in v:
            cm = store.get(CONFIGMAP, self.ns, v["configMap"].get("name", "")) or {}
            data = {k: s.encode() for k, s in (cm.get("data") or {}).items()}
            data |= {k: base64.b64decode(s) for k, s in (cm.get("binaryData") or {}).items()}
            return _project(data, v["configMap"].get("items"))
        if "secret" in v:
            sec = store.get(SECRET, self.ns, v["secret"].get("secretName", "")) or {}
            data = {k: base64.b64decode(s) for k, s in (sec.get("data") or {}).items()}
            return _project(data, v["secret"].get("items"))
        if "emptyDir" in v:
            return dict(self.empty_dirs.get(v["name"], {}))
        return {}

    def save_empty_dirs(self, c: dict, fs: MemFS) -> None:
        """Files a container wrote under its emptyDir mounts are there for the next container."""
        pod = self.pod
        if pod is None:
            return
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            v = volumes.get(m.get("name"))
            if v is None or "emptyDir" not in v:
                continue
            root = m["mountPath"].rstrip("/")
            saved = self.empty_dirs.setdefault(v["name"], {})
            for path in _walk(fs, root):
                with contextlib.suppress(FSError):
                    saved[path[len(root) + 1:]] = fs.read(path)


def _walk(fs: MemFS, root: str) -> list[str]:
    out = []
    if not fs.isdir(root):
        return out
    for name in fs.listdir(root):
        p = root + "/" + name
        if fs.isdir(p):
            out += _walk(fs, p)
        else:
            out.append(p)
    return out


def _project(data: dict[str, bytes], items: list[dict] | None) -> dict[str, bytes]:
    if not items:
        return data
    return {i["path"]: data[i["key"]] for i in items if i.get("key") in data}


def _env(c: dict, base: dict[str, str], lookup: Callable[[str, str, str], str | None] | None = None) -> dict[str, str]:
    """Container environment; ``lookup(kind, name, key)`` resolves secretKeyRef/configMapKeyRef."""
    env = dict(base)
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif lookup and (ref := (e.get("valueFrom") or {}).get("secretKeyRef")):
            value = lookup("Secret", ref.get("name", ""), ref.get("key", ""))
            if value is not None:
                env[e["name"]] = value
        elif lookup and (ref := (e.get("valueFrom") or {}).get("configMapKeyRef")):
            value = lookup("ConfigMap", ref.get("name", ""), ref.get("key", ""))
            if value is not None:
                env[e["name"]] = value
    return env


def _quote(a: str) -> str:
    return "'" + a.replace("'", "'\\''") + "'"


def _conditions(initialized: bool, ready: bool, scheduled: bool) -> list[dict]:
    t = now_rfc3339()
    def c(type_: str, ok: bool) -> dict:
        return {"type": type_, "status": "True" if ok else "False", "lastProbeTime": None, "lastTransitionTime": t}
    return [c("PodReadyToStartContainers", True), c("Initialized", initialized), c("Ready", ready),
            c("ContainersReady", ready), c("PodScheduled", scheduled)]


def _waiting(c: dict, reason: str, message: str | None = None) -> dict:
    w = {"reason": reason}
    if message:
        w["message"] = message
    return {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
            "started": False, "state": {"waiting": w}, "lastState": {}}


def _running(c: dict, image_id: str) -> dict:
    return {"name": c["name"], "image": c["image"], "imageID": image_id,
            "containerID": "containerd://" + hashlib.sha256(c["name"].encode() + image_id.encode()).hexdigest(),
            "ready": True, "restartCount": 0, "started": True,
            "state": {"running": {"startedAt": now_rfc3339()}}, "lastState": {}}


def _terminated(c: dict, rc: int) -> dict:
    t = now_rfc3339()
    return {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
            "started": False, "lastState": {},
            "state": {"terminated": {"exitCode": rc, "reason": "Completed" if rc == 0 else "Error",
                                     "startedAt": t, "finishedAt": t}}}


def _crashloop(c: dict, rc: int) -> dict:
    t = now_rfc3339()
    return {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 1,
            "started": False, "state": {"waiting": {"reason": "CrashLoopBackOff", "message":
                                                    f"back-off 10s restarting failed container={c['name']}"}},
            "lastState": {"terminated": {"exitCode": rc, "reason": "Error", "startedAt": t, "finishedAt": t}}}


class Kubelet:
    """Runs the pods bound to simulated nodes."""

    def __init__(self, cluster: Cluster):
        self.c = cluster
        self.runs: dict[str, PodRun] = {}  # pod uid -> run
        self._terminating: set[str] = set()  # pods marked for deletion whose final delete is under way
        self.finishing: set[asyncio.Task] = set()  # those final deletes (one waits for its node's kubelet)
        self._kubelet_up: dict[str, asyncio.Event] = {}

    def up_event(self, node: SimNode) -> asyncio.Event:
        ev = self._kubelet_up.get(node.name)
        if ev is None:
            ev = self._kubelet_up[node.name] = asyncio.Event()
            if node.kubelet_up:
                ev.set()
        return ev

    async def wait_kubelet(self, node: SimNode) -> None:
        ev = self.up_event(node)
        if not node.kubelet_up:
            ev.clear()
        await ev.wait()

    def kubelet_changed(self, node: SimNode) -> None:
        ev = self.up_event(node)
        ev.set() if node.kubelet_up else ev.clear()

    def pod_changed(self, etype: str, old: dict | None, new: dict | None) -> None:
        if etype == "DELETED":
            self._terminating.discard(old["metadata"]["uid"])
            run = self.runs.pop(old["metadata"]["uid"], None)
            if run and run.task:
                run.task.cancel()
            return
        uid = new["metadata"]["uid"]
        if new["metadata"].get("deletionTimestamp"):
            self._terminate(new)
            return
        node = new["spec"].get("nodeName")
        if uid in self.runs or not node or node not in self.c.nodes:
            return
        if new.get("status", {}).get("phase") not in (None, "Pending"):
            return
        run = self.runs[uid] = PodRun(self, new)
        run.task = asyncio.get_running_loop().create_task(run.run())

    def _terminate(self, pod: dict) -> None:
        """Graceful deletion (a real API server marks the pod, the kubelet finishes it): stop its containers,
        then the kubelet's final delete — grace 0, and only this pod (its uid) — once the node's kubelet runs."""
        md = pod["metadata"]
        uid, ns, name = md["uid"], md["namespace"], md["name"]
        if uid in self._terminating:
            return
        self._terminating.add(uid)
        run = self.runs.pop(uid, None)
        if run and run.task:
            run.task.cancel()
        node = self.c.nodes.get(pod["spec"].get("nodeName") or "")

        async def finish() -> None:
            if node is not None:
                await self.wait_kubelet(node)
            with contextlib.suppress(ApiError):
                self.c.store.delete(POD, ns, name, preconditions={"uid": uid})
        task = asyncio.get_running_loop().create_task(finish())
        self.finishing.add(task)
        task.add_done_callback(self.finishing.discard)

    def node_commands(self, node: SimNode) -> dict:
        c = self.c

        async def systemctl(argv, stdin, ctx):
            if node.init != "systemd":  # no systemctl on an OpenRC node: what sh says, and the script goes on
                return 127, b"", b"sh: systemctl: not found\n"
            return await c.systemd.command(node, argv)

        async def crictl_cmd(argv, stdin, ctx):
            return await crictl(node, argv, lambda n, image: c.pull(n, image, {}))

        curl_fetch = self._fetch_for(lambda: c.node_dns(node))
        return {"systemctl": systemctl, "crictl": crictl_cmd, "k3s": crictl_cmd,
                "curl": make_curl(curl_fetch, c.network.system_roots_pem()),
                "wget": make_wget(curl_fetch, c.network.system_roots_pem())}

    def dns_view(self, run: PodRun) -> DnsView:
        pod = run.pod or {"spec": {}}
        hosts = {}
        for alias in pod["spec"].get("hostAliases") or []:
            for h in alias.get("hostnames") or []:
                hosts[h] = alias.get("ip")
        return DnsView(hosts=hosts, cluster_dns=self.c.cluster_dns,
                       search=[f"{run.ns}.svc.cluster.local", "svc.cluster.local", "cluster.local"], musl=True)

    def pod_fetch(self, run: PodRun):
        return self._fetch_for(lambda: self.dns_view(run))

    def _fetch_for(self, view: Callable[[], DnsView]):
        async def fetch(req: HttpRequest, tls: TLSConfig, resolve: dict | None = None,
                        timeout: float = 10.0) -> HttpResponse:
            return await self.c.network.fetch(req, view(), tls, resolve=resolve or None, timeout=timeout)
        return fetch

    def pod_commands(self, run: PodRun) -> dict:
        fetch = self.pod_fetch(run)
        roots = self.c.network.system_roots_pem()
        return {"curl": make_curl(fetch, roots), "wget": make_wget(fetch, roots)}




def _repo(image: str) -> str:
    ref = containerd.parse_image(image)
    return f"{ref.host}/{ref.repo}"
