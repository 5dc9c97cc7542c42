"""The Kubernetes REST API over aiohttp, as the kubernetes client and kubectl expect it.

Paths, discovery, list/watch streams, Status errors, Table output for kubectl, pod logs,
and the sandbox's own ``/_sandbox/*`` endpoints (state, compaction, faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import parse_qs

from aiohttp import web

from . import tables
from .kinds import BY_PATH, GROUPS, KINDS, VERBS, Kind
from .store import ApiError, Store

NS_KIND = next(k for k in KINDS if k.kind == "Namespace")
K8S_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.5+k3s1", "gitCommit": "sandbox",
               "gitTreeState": "clean", "buildDate": "2026-10-01T00:00:00Z", "goVersion": "go1.24.6",
               "compiler": "gc", "platform": "linux/amd64"}
# what kube-apiserver's /readyz says while its etcd check fails (HTTP 500; the reason is withheld from clients
# that did not ask ?verbose, as the real one does)
NOT_READY = ("[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n[+]etcd-readiness ok\n"
             "[+]informer-sync ok\n[+]poststarthook/start-apiextensions-controllers ok\n"
             "[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n[+]shutdown ok\nreadyz check failed\n")


def parse_bool(v: str | None) -> bool:
    """Go's strconv.ParseBool: older clients send ``True``."""
    return (v or "").strip() in ("1", "t", "T", "true", "TRUE", "True")


class ApiServer:
    """Serves a Store. ``extra_routes`` are the sandbox's own endpoints under /_sandbox/."""

    def __init__(self, store: Store, *, token: str, ssl_context: ssl.SSLContext | None,
                 logs: Callable[[str, str, str | None], str | None],
                 pod_done: Callable[[str, str], bool],
                 log_unreachable: Callable[[str, str, str], str | None] = lambda ns, name, c: None,
                 extra_routes: dict[str, Callable[[web.Request], Awaitable[web.Response]]] | None = None,
                 bookmark_interval: float = 5.0, seed: int = 0):
        self.store = store
        self.token = token
        self.ssl_context = ssl_context
        self.logs = logs
        self.pod_done = pod_done
        self.log_unreachable = log_unreachable
        self.extra = extra_routes or {}
        self.bookmark_interval = bookmark_interval
        self.requests: list[dict] = []
        self.fault_rate = 0.0
        self.fault_rng = random.Random(seed)
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self.down = False
        # after the port opens again, /readyz answers 500 this long (k3s: etcd and post-start hooks catch up)
        self.readyz_lag = 0.0
        self.ready_at = 0.0  # time.time() from which /readyz is ok
        self.up_windows: list[dict] = []  # each return of the port: {"up": t, "ready": t + lag}
        self._streams: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        app = web.Application(client_max_size=64 * 1024 * 1024, handler_args={"max_field_size": 65536})
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.2,
                                    handler_cancellation=True)
        await self.runner.setup()
        self.host = host
        self.site = web.TCPSite(self.runner, host, port, ssl_context=self.ssl_context, reuse_address=True)
        await self.site.start()
        self.port = self.site._server.sockets[0].getsockname()[1]
        return self.port

    async def set_down(self, down: bool) -> None:
        """Take the API endpoint away (a K3s server restart) or bring it back on the same port."""
        if down == self.down:
            return
        self.down = down
        if down:
            for t in list(self._streams):
                t.cancel()
            if self.site:
                await self.site.stop()
            server = self.runner.server if self.runner else None
            for conn in list(getattr(server, "connections", []) if server else []):
                with contextlib.suppress(Exception):
                    conn.force_close()
                    if conn.transport:
                        conn.transport.close()
        else:
            self.site = web.TCPSite(self.runner, self.host, self.port, ssl_context=self.ssl_context,
                                    reuse_address=True)  # the runner's shutdown_timeout applies
            for _ in range(50):
                try:
                    await self.site.start()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            now = time.time()
            self.ready_at = now + self.readyz_lag
            self.up_windows.append({"up": now, "ready": self.ready_at})

    async def stop(self) -> None:
        for t in list(self._streams):
            t.cancel()
        if self.runner:
            await self.runner.cleanup()

    # ------------------------------------------------------------------ dispatch
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_sandbox/"):
            handler = self.extra.get(path)
            if handler is None:
                return web.json_response({"error": "no such sandbox endpoint"}, status=404)
            return await handler(request)
        self.requests.append({"time": time.time(), "method": request.method, "path": path,
                              "query": request.query_string, "user_agent": request.headers.get("User-Agent", "")})
        try:
            if path.rstrip("/") in ("/readyz", "/healthz") and time.time() < self.ready_at:
                return web.Response(status=500, text=NOT_READY)  # the port is open, etcd not ready yet
            if path.rstrip("/") in ("/readyz", "/livez", "/healthz"):
                return web.Response(text="ok")
            if path.rstrip("/") == "/version":  # the Python client asks for /version/
                return web.json_response(K8S_VERSION)
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if self.fault_rate and self.fault_rng.random() < self.fault_rate:
                return await self._fault(request)
            ctype = request.headers.get("Content-Type", "")
            if request.method in ("POST", "PUT", "PATCH") and ("protobuf" in ctype or "cbor" in ctype):
                # not decoded here; a clear Status rather than a 500 (kubectl create sends protobuf)
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                               "accepted media types include: application/json, application/yaml")
            return await self._route(request)
        except ApiError as e:
            return self._status(e)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return self._status(ApiError(400, "BadRequest", f"error decoding request body: {e}"))

    async def _fault(self, request: web.Request) -> web.StreamResponse:
        roll = self.fault_rng.random()
        if roll < 0.4:
            return self._status(ApiError(500, "InternalError", "Internal error occurred: etcdserver: request timed out"))
        if roll < 0.8:
            resp = self._status(ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the "
                                         "request", retry_after=1))
            resp.headers["Retry-After"] = "1"
            return resp
        await asyncio.sleep(65)  # beyond any sane client timeout
        return self._status(ApiError(504, "Timeout", "the server was unable to return a response in the time allotted"))

    @staticmethod
    def _status(e: ApiError) -> web.Response:
        resp = web.json_response(e.status(), status=e.code)
        if e.retry_after:
            resp.headers["Retry-After"] = str(e.retry_after)
        return resp

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.path.startswith("/openapi/"):
            return self._openapi(parts)
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]})
        if parts == ["apis"]:
            return web.json_response(self._group_list())
        if parts[:1] == ["api"]:
            group, rest = "", parts[1:]
        elif parts[:1] == ["apis"] and len(parts) >= 2:
            group, rest = parts[1], parts[2:]
            if len(rest) == 0:
                g = self._group(group)
                if g is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                return web.json_response(g)
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        version, rest = rest[0], rest[1:]
        if not rest:
            return web.json_response(self._resource_list(group, version))
        watch_path = False
        if rest[0] == "watch":
            watch_path, rest = True, rest[1:]
        namespace = None
        if len(rest) >= 2 and rest[0] == "namespaces" and not (group == "" and len(rest) in (2, 3)
                                                                   and (len(rest) == 2 or rest[2] in ("status", "finalize"))):
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        kind = BY_PATH.get((group, version, rest[0]))
        if kind is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if namespace is not None and not kind.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if sub and sub not in kind.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        q = request.query
        method = request.method
        if method == "GET" and name is None:
            if watch_path or parse_bool(q.get("watch")):
                return await self._watch(request, kind, namespace)
            return self._list(request, kind, namespace)
        if method == "GET" and name is not None and watch_path:
            return await self._watch(request, kind, namespace, name)
        ns = namespace or ""
        dry_run = q.get("dryRun") == "All"
        strict = q.get("fieldValidation") == "Strict"
        manager = q.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]
        if method == "GET":
            if sub == "log":
                return await self._log(request, kind, ns, name)
            obj = self.store.must_get(kind, ns, name)
            if sub == "scale":
                return web.json_response(_scale(obj))
            return self._obj_response(request, kind, obj)
        if method == "POST" and name is None:
            body = await request.json()
            _check_body_namespace(body, kind, namespace)
            if isinstance(body, dict) and (body.get("metadata") or {}).get("resourceVersion"):
                # what etcd3's store answers (a 500, no reason): the object was copied from a live one
                raise ApiError(500, "", "resourceVersion should not be set on objects to be created")
            obj = self.store.create(kind, body, ns, manager=manager, dry_run=dry_run, strict=strict)
            return web.json_response(obj, status=201)
        if method == "PUT" and name is not None:
            body = await request.json()
            _check_body_namespace(body, kind, namespace)
            if sub == "scale":  # the body is an autoscaling/v1 Scale: it sets spec.replicas
                obj = copy.deepcopy(self.store.must_get(kind, ns, name))
                obj["spec"]["replicas"] = (body.get("spec") or {}).get("replicas", 0)
                obj["metadata"]["resourceVersion"] = (body.get("metadata") or {}).get("resourceVersion")
                obj = self.store.update(kind, obj, ns, name, subresource=sub, manager=manager, dry_run=dry_run)
                return web.json_response(_scale(obj))
            obj = self.store.update(kind, body, ns, name, subresource=sub, manager=manager, dry_run=dry_run,
                                    strict=strict)
            return web.json_response(obj)
        if method == "PATCH" and name is not None:
            body = await request.read()
            ctype = request.headers.get("Content-Type", "")
            if ctype.startswith("application/apply-patch") and self.store.get(kind, ns, name) is None:
                obj = self.store.patch(kind, ns, name, body, ctype, subresource=sub, manager=q.get("fieldManager"),
                                       force=parse_bool(q.get("force")), dry_run=dry_run, strict=strict)
                return web.json_response(obj, status=201)
            obj = self.store.patch(kind, ns, name, body, ctype, subresource=sub,
                                   manager=q.get("fieldManager") or (None if ctype.startswith("application/apply")
                                                                     else manager),
                                   force=parse_bool(q.get("force")), dry_run=dry_run, strict=strict)
            # a Scale patch ({"spec": {"replicas": N}}) has the same shape on the object itself
            return web.json_response(_scale(obj) if sub == "scale" else obj)
        if method == "DELETE" and name is not None:
            raw = await request.read()
            opts = json.loads(raw) if raw.strip() else {}
            obj = self.store.delete(kind, ns, name, dry_run=dry_run or (opts.get("dryRun") == ["All"]),
                                    preconditions=opts.get("preconditions"))
            # the kinds whose registry has ReturnDeletedObject (the client types these responses)
            if kind.kind in ("Pod", "Service", "ServiceAccount") or parse_bool(q.get("returnObject")):
                return web.json_response(obj)
            return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                      "details": {"name": name, "kind": kind.plural, "uid": obj["metadata"]["uid"]}})
        if method == "DELETE" and name is None:
            items = self.store.list(kind, namespace, q.get("labelSelector"), q.get("fieldSelector"))
            for o in items:
                self.store.delete(kind, o["metadata"].get("namespace", ""), o["metadata"]["name"], dry_run=dry_run)
            return web.json_response({"kind": kind.list_kind, "apiVersion": kind.api_version,
                                      "metadata": {"resourceVersion": str(self.store.rv)}, "items": items})
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # ------------------------------------------------------------------ reads
    @staticmethod
    def _wants_table(request: web.Request) -> bool:
        return "as=Table" in request.headers.get("Accept", "")

    def _obj_response(self, request: web.Request, kind: Kind, obj: dict) -> web.Response:
        if self._wants_table(request):
            return web.json_response(tables.table(kind, [obj], str(self.store.rv), request.query.get("includeObject")))
        return web.json_response(obj)

    def _list(self, request: web.Request, kind: Kind, namespace: str | None) -> web.Response:
        q = request.query
        items = self.store.list(kind, namespace, q.get("labelSelector"), q.get("fieldSelector"))
        rv = str(self.store.rv)
        limit = int(q.get("limit") or 0)
        cont = q.get("continue")
        meta: dict = {"resourceVersion": rv}
        if cont:
            start = int(cont)
            items = items[start:]
        else:
            start = 0
        if limit and len(items) > limit:
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if self._wants_table(request):
            t = tables.table(kind, items, rv, q.get("includeObject"))
            t["metadata"].update(meta)
            return web.json_response(t)
        body = {"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": meta, "items": items}
        return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), content_type="application/json")

    async def _watch(self, request: web.Request, kind: Kind, namespace: str | None,
                     name: str | None = None) -> web.StreamResponse:
        q = request.query
        fsel = q.get("fieldSelector")
        if name:
            fsel = ",".join(x for x in (fsel, f"metadata.name={name}") if x)
        rv = q.get("resourceVersion")
        timeout = float(q.get("timeoutSeconds") or 1800)
        bookmarks = parse_bool(q.get("allowWatchBookmarks"))
        table = self._wants_table(request)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                        "Transfer-Encoding": "chunked"})
        try:
            watcher = self.store.watch(kind, namespace, rv, q.get("labelSelector"), fsel)
        except ApiError as e:
            if e.code != 410:
                raise
            await resp.prepare(request)
            await resp.write(json.dumps({"type": "ERROR", "object": e.status()}).encode() + b"\n")
            return resp
        task = asyncio.current_task()
        self._streams.add(task)
        try:
            await resp.prepare(request)
            if parse_bool(q.get("sendInitialEvents")):
                # WatchList (client-go's default since 1.32): the initial state, then a bookmark marking its end
                while not watcher.queue.empty():
                    etype, obj = watcher.queue.get_nowait()
                    if table:
                        obj = tables.table(kind, [obj], obj["metadata"]["resourceVersion"], q.get("includeObject"))
                    await resp.write(json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n")
                bm = {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": {
                    "resourceVersion": str(self.store.rv), "annotations": {"k8s.io/initial-events-end": "true"}}}
                await resp.write(json.dumps({"type": "BOOKMARK", "object": bm}).encode() + b"\n")
            deadline = time.monotonic() + timeout
            last_bookmark = time.monotonic()
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = min(left, self.bookmark_interval) if bookmarks else left
                try:
                    etype, obj = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and time.monotonic() - last_bookmark >= self.bookmark_interval:
                        last_bookmark = time.monotonic()
                        bm = {"kind": kind.kind, "apiVersion": kind.api_version,
                              "metadata": {"resourceVersion": str(self.store.rv)}}
                        await resp.write(json.dumps({"type": "BOOKMARK", "object": bm}).encode() + b"\n")
                    continue
                if table:
                    obj = tables.table(kind, [obj], obj["metadata"]["resourceVersion"], q.get("includeObject"))
                await resp.write(json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n")
                if self.fault_rate and self.fault_rng.random() < self.fault_rate:
                    # a dropped watch: the connection just ends, as when a proxy or the apiserver goes away
                    if request.transport is not None:
                        request.transport.close()
                    return resp
            with contextlib.suppress(Exception):
                await resp.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            pass
        finally:
            self.store.unwatch(watcher)
            self._streams.discard(task)
        return resp

    async def _log(self, request: web.Request, kind: Kind, ns: str, name: str) -> web.StreamResponse:
        pod = self.store.must_get(kind, ns, name)
        q = request.query
        containers = [c["name"] for c in (pod["spec"].get("initContainers") or []) + pod["spec"]["containers"]]
        container = q.get("container") or (pod["spec"]["containers"][0]["name"]
                                           if len(pod["spec"]["containers"]) == 1 else None)
        if container is None:
            raise ApiError(400, "BadRequest", f"a container name must be specified for pod {name}, choose one of: "
                           f"[{' '.join(c['name'] for c in pod['spec']['containers'])}]")
        if container not in containers:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        text = self.logs(ns, name, container)
        unreachable = self.log_unreachable(ns, name, container) if text is not None else None
        if unreachable:  # the API server fetches logs from the node's kubelet: it is away
            raise ApiError(500, "InternalError", unreachable)
        if text is None:
            if pod.get("status", {}).get("phase") == "Pending":
                raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: '
                               "ContainerCreating")
            text = ""
        if not parse_bool(q.get("follow")):
            return web.Response(text=_tail(text, q.get("tailLines")), content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        sent = 0
        text = _tail(text, q.get("tailLines"))
        while True:
            cur = self.logs(ns, name, container) or ""
            if sent == 0 and text:
                await resp.write(text.encode())
                sent = len(cur)
            elif len(cur) > sent:
                await resp.write(cur[sent:].encode())
                sent = len(cur)
            if self.pod_done(ns, name) or self.store.get(kind, ns, name) is None:
                break
            await asyncio.sleep(0.1)
        await resp.write_eof()
        return resp

    # ------------------------------------------------------------------ discovery
    def _group_list(self) -> dict:
        groups = []
        for g, ks in GROUPS.items():
            if g:
                gv = {"groupVersion": f"{g}/{ks[0].version}", "version": ks[0].version}
                groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _group(self, group: str) -> dict | None:
        ks = GROUPS.get(group)
        if not ks or not group:
            return None
        gv = {"groupVersion": f"{group}/{ks[0].version}", "version": ks[0].version}
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv}

    def _resource_list(self, group: str, version: str) -> dict:
        ks = [k for k in GROUPS.get(group, []) if k.version == version]
        if not ks:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources = []
        for k in ks:
            entry = {"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.kind,
                     "verbs": VERBS, "storageVersionHash": ""}
            if k.short_names:
                entry["shortNames"] = list(k.short_names)
            if k.categories:
                entry["categories"] = list(k.categories)
            resources.append(entry)
            for sub in k.subresources:
                resources.append({"name": f"{k.plural}/{sub}", "singularName": "", "namespaced": k.namespaced,
                                  "kind": k.kind if sub != "scale" else "Scale",
                                  "verbs": ["get"] if sub == "log" else ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": ks[0].api_version,
                "resources": resources}

    def _openapi(self, parts: list[str]) -> web.Response:
        if parts == ["openapi", "v3"]:
            paths = {}
            for g, ks in GROUPS.items():
                key = f"api/{ks[0].version}" if not g else f"apis/{g}/{ks[0].version}"
                paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash=sandbox"}
            return web.json_response({"paths": paths})
        if parts[:2] == ["openapi", "v3"]:
            return web.json_response(tables.openapi_v3("/".join(parts[2:])))
        raise ApiError(404, "NotFound", "the server could not find the requested resource")


def _check_body_namespace(body, kind: Kind, namespace: str | None) -> None:
    ns = (body.get("metadata") or {}).get("namespace") if isinstance(body, dict) else None
    if kind.namespaced and ns and namespace and ns != namespace:
        raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent "
                       "on the request")


def _scale(obj: dict) -> dict:
    """The ``/scale`` subresource's view of a Deployment or StatefulSet (autoscaling/v1 Scale)."""
    md = {k: obj["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
          if k in obj["metadata"]}
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": md,
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))}}


def _tail(text: str, tail: str | None) -> str:
    if not tail:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-int(tail):]) if int(tail) > 0 else ""


def query_dict(qs: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(qs).items()}


def iso(t: float) -> str:
    return datetime.fromtimestamp(t).isoformat()
