"""A replica of a real API server's objects, kept by list+watch, for the node agent of a real-API world.

The simulation (``Kubelet``, ``Traefik``, cluster DNS, ``Cluster.event``) reads objects synchronously from
a ``Store``. Against a real kube-apiserver it reads them from a ``Mirror`` instead: the same ``get``,
``list``, ``kinds`` and ``listeners``, filled the way a kubelet's informers are filled (list, then watch
from the list's resourceVersion). Nothing here decides what an object looks like:
every object in the mirror is one the API server returned. A watch the server ends (its timeout) or drops
(a k3s restart) is resumed from the last resourceVersion seen; only a 410 Gone lists again.

Writes are a kubelet's writes: status subresources, Node Leases and Events. ``update`` changes the local
copy at once (so the synchronous simulation sees its own write) and queues the write for the API server,
one in flight per object, sending the newest local copy without a resourceVersion (pods, nodes, events
and services allow unconditional updates); a Lease names the revision the server last gave, and after a 409
takes the server's revision and sends again (the agent is its only writer). Until the server has acknowledged a status write, a
watch event for that object keeps the local status, so a late event never undoes a newer write. Creates
that the caller must wait for (bootstrap: Nodes, Leases, Services) are ``acreate``; runtime creates
(Events) are fire-and-forget through ``create``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import ssl
from collections.abc import Iterable

import aiohttp

from wizard.cluster import Kind as ClientKind

from .kinds import Kind
from .store import ApiError, KindState, Store


class Mirror(Store):
    def __init__(self, url: str, token: str, ca_file: str, kinds: Iterable[Kind]):
        super().__init__()
        self.url = url.rstrip("/")
        self.kinds = {k: KindState() for k in kinds}
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                         "User-Agent": "ghcr2gitea-node-agent"}
        self._ssl = ssl.create_default_context(cafile=ca_file)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []
        self._dirty: dict[tuple, dict] = {}  # (kind, ns, name, subresource) → newest local object to send
        self._sending: set[tuple] = set()
        self._remote_rv: dict[tuple, str] = {}  # (kind, ns, name) → the newest resourceVersion the server gave
        self._background: set[asyncio.Task] = set()  # writes in flight (cancelled on close)
        self._synced: dict[Kind, asyncio.Event] = {}
        self.errors: list[str] = []  # writes the API server refused (shown in the world's state)
        self.watch_timeout = 300  # seconds the API server keeps each watch open (then the mirror watches on)

    # ------------------------------------------------------------------ paths
    def _path(self, kind: Kind, namespace: str = "", name: str = "", subresource: str = "") -> str:
        # the one place resource URLs are spelled: the wizard's own client's Kind
        return self.url + ClientKind(kind.api_version, kind.kind, kind.plural, kind.namespaced).path(
            namespace or None, name or None, subresource or None)

    @staticmethod
    def _key(kind: Kind, obj: dict) -> tuple[str, str]:
        md = obj["metadata"]
        return (md.get("namespace", "") if kind.namespaced else "", md["name"])

    def _typed(self, kind: Kind, obj: dict) -> dict:
        return {"apiVersion": kind.api_version, "kind": kind.kind, **obj}

    # ------------------------------------------------------------------ life
    async def start(self, timeout: float = 30.0) -> Mirror:
        self._session = aiohttp.ClientSession(headers=self._headers, connector=aiohttp.TCPConnector(ssl=self._ssl))
        loop = asyncio.get_running_loop()
        for kind in self.kinds:
            self._synced[kind] = asyncio.Event()
            self._tasks.append(loop.create_task(self._informer(kind)))
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in self._synced.values())), timeout)
        return self

    async def close(self) -> None:
        for t in [*self._tasks, *self._background]:
            t.cancel()
        for t in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued write has been answered (tests, and before the world's state is read)."""
        async with asyncio.timeout(timeout):
            while self._dirty or self._sending:
                await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ informers
    async def _informer(self, kind: Kind) -> None:
        """client-go's reflector: list once, then watch from the last resourceVersion seen — again after the
        server ends a watch (timeoutSeconds) or drops it (a k3s restart); only a 410 Gone (or another watch
        error event) lists again."""
        backoff, rv = 0.1, None
        while True:
            try:
                if rv is None:
                    rv = await self._relist(kind)
                    self._synced[kind].set()
                rv = await self._watch(kind, rv)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                if isinstance(e, aiohttp.ClientResponseError) and e.status == 410:
                    rv = None  # expired: list again; anything else (the server away, a k3s restart): watch again
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _relist(self, kind: Kind) -> str:
        async with self._session.get(self._path(kind)) as r:
            r.raise_for_status()
            body = await r.json()
        fresh = {self._key(kind, o): self._typed(kind, o) for o in body.get("items") or []}
        st = self.kinds[kind]
        for key, old in list(st.objects.items()):
            if key not in fresh:
                self._commit_remote(kind, "DELETED", old)
        for obj in fresh.values():
            self._commit_remote(kind, "MODIFIED" if self._key(kind, obj) in st.objects else "ADDED", obj)
        return body["metadata"]["resourceVersion"]

    async def _watch(self, kind: Kind, rv: str) -> str | None:
        """Apply the watch's events; the last resourceVersion seen (to watch on from), None to relist."""
        params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(self.watch_timeout)}
        async with self._session.get(self._path(kind), params=params,
                                     timeout=aiohttp.ClientTimeout(total=None, sock_read=self.watch_timeout + 30)) as r:
            r.raise_for_status()
            async for line in r.content:
                if not line.strip():
                    continue
                ev = json.loads(line)
                etype, obj = ev["type"], ev["object"]
                if etype == "ERROR":  # 410 Gone (compacted) or another watch error: relist
                    return None
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                if etype != "BOOKMARK":
                    self._commit_remote(kind, etype, obj)
        return rv

    def _commit_remote(self, kind: Kind, etype: str, obj: dict) -> None:
        """An object as the API server has it; a status we have not had acknowledged stays ours."""
        key = self._key(kind, obj)
        old = self.kinds[kind].objects.get(key)
        if etype == "DELETED":
            if old is not None:
                self.kinds[kind].objects.pop(key, None)
                self._notify("DELETED", kind, old, None)
            return
        obj = self._typed(kind, obj)
        if old is not None and _older(obj, old):  # a watch event that our PUT's answer already overtook
            return
        self._remote_rv[(kind, *key)] = obj["metadata"].get("resourceVersion", "")
        pending = self._dirty.get((kind, *key, "status"))
        if pending is not None or (kind, *key, "status") in self._sending:
            local = pending if pending is not None else old
            if local is not None and "status" in local:
                obj = {**obj, "status": copy.deepcopy(local["status"])}
        self.kinds[kind].objects[key] = obj
        self._notify("ADDED" if old is None else "MODIFIED", kind, old, obj)

    def _notify(self, etype: str, kind: Kind, old: dict | None, new: dict | None) -> None:
        for listener in self.listeners:
            listener(etype, kind, old, new)

    # ------------------------------------------------------------------ writes
    def update(self, kind: Kind, obj: dict, namespace: str, name: str, *, subresource: str = "",
               manager: str = "unknown", validate: bool = True, **_) -> dict:
        key = (namespace if kind.namespaced else "", name)
        old = self.kinds[kind].objects.get(key)
        if old is None:
            raise ApiError(404, "NotFound", f'{kind.plural} "{name}" not found', kind=kind, name=name)
        new = copy.deepcopy(obj)
        self.kinds[kind].objects[key] = new
        self._notify("MODIFIED", kind, old, new)
        wkey = (kind, *key, subresource)
        self._dirty[wkey] = new
        if wkey not in self._sending:
            self._sending.add(wkey)
            self._spawn(self._send(wkey, manager))
        return new

    async def _send(self, wkey: tuple, manager: str) -> None:
        kind, ns, name, subresource = wkey
        conflicts = 0
        try:
            while (obj := self._dirty.pop(wkey, None)) is not None:
                body = self._typed(kind, copy.deepcopy(obj))
                body["metadata"].pop("managedFields", None)
                if kind.conditional_update:  # over the revision the server has now: the agent is its only writer
                    body["metadata"]["resourceVersion"] = self._remote_rv.get((kind, ns, name), "")
                else:
                    body["metadata"].pop("resourceVersion", None)  # unconditional: the newest local copy wins
                try:
                    async with self._session.put(self._path(kind, ns, name, subresource), json=body,
                                                 params={"fieldManager": manager}) as r:
                        answer = await r.json(content_type=None)
                        if r.status == 409 and kind.conditional_update and conflicts < 3:
                            conflicts += 1  # someone else wrote it: take their revision, then send ours again
                            self._dirty.setdefault(wkey, obj)
                            await self._refresh(kind, ns, name)
                            continue
                        if r.status >= 400:
                            self.errors.append(f"PUT {kind.plural}/{name}/{subresource}: {r.status} "
                                               f"{answer.get('message', '')}")
                            continue
                except (aiohttp.ClientError, OSError, TimeoutError):
                    self._dirty.setdefault(wkey, obj)  # the API server is away: send the newest copy later
                    await asyncio.sleep(0.2)
                    continue
                conflicts = 0
                self._remote_rv[(kind, ns, name)] = answer["metadata"]["resourceVersion"]
                if wkey not in self._dirty:  # nothing newer is queued: take the server's answer
                    self._sending.discard(wkey)
                    self._commit_remote(kind, "MODIFIED", answer)
                    self._sending.add(wkey)
        finally:
            self._sending.discard(wkey)

    async def _refresh(self, kind: Kind, namespace: str, name: str) -> None:
        async with self._session.get(self._path(kind, namespace, name)) as r:
            if r.status == 200:
                self._commit_remote(kind, "MODIFIED", await r.json())

    def create(self, kind: Kind, obj: dict, namespace: str = "", *, manager: str = "unknown", **_) -> dict:
        """Fire-and-forget (Events): the object appears in the mirror when the watch brings it."""
        self._spawn(self._create_quietly(kind, obj, namespace, manager))
        return obj

    async def _create_quietly(self, kind: Kind, obj: dict, namespace: str, manager: str) -> None:
        try:
            await self.acreate(kind, obj, namespace, manager=manager)
        except ApiError as e:
            self.errors.append(f"POST {kind.plural}: {e.code} {e}")
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass  # an Event lost while the API server is away: kubelets drop them too

    async def acreate(self, kind: Kind, obj: dict, namespace: str = "", *, manager: str = "unknown",
                      exist_ok: bool = False) -> dict:
        """Create and return the server's object (its uid, resourceVersion, defaults)."""
        body = self._typed(kind, copy.deepcopy(obj))
        async with self._session.post(self._path(kind, namespace), json=body, params={"fieldManager": manager}) as r:
            answer = await r.json(content_type=None)
            if r.status == 409 and exist_ok:
                async with self._session.get(self._path(kind, namespace, obj["metadata"]["name"])) as g:
                    g.raise_for_status()
                    return self._typed(kind, await g.json())
            if r.status >= 400:
                raise ApiError(r.status, answer.get("reason", ""), answer.get("message", ""), kind=kind,
                               name=obj["metadata"].get("name", ""))
        return self._typed(kind, answer)

    async def aput(self, kind: Kind, obj: dict, *, subresource: str = "", manager: str = "unknown") -> dict:
        """One update the caller waits for (bootstrap: a Node's or a Service's first status)."""
        md = obj["metadata"]
        async with self._session.put(self._path(kind, md.get("namespace", ""), md["name"], subresource),
                                     json=self._typed(kind, obj), params={"fieldManager": manager}) as r:
            answer = await r.json(content_type=None)
            if r.status >= 400:
                raise ApiError(r.status, answer.get("reason", ""), answer.get("message", ""), kind=kind,
                               name=md["name"])
        return self._typed(kind, answer)

    def delete(self, kind: Kind, namespace: str, name: str, *, preconditions: dict | None = None, **_) -> None:
        """A kubelet's final delete of a pod it has stopped: grace 0, and (with a uid precondition) only the
        pod it ran. Fire-and-forget: the watch's DELETED removes it from the mirror."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}
        if preconditions:
            body["preconditions"] = dict(preconditions)
        self._later(f"DELETE {kind.plural}/{name}", self._session.delete(self._path(kind, namespace, name), json=body))

    def bind(self, namespace: str, name: str, node: str, uid: str) -> None:
        """What the scheduler does: POST pods/NAME/binding (spec.nodeName cannot be written otherwise)."""
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": namespace, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        pod = next(k for k in self.kinds if k.kind == "Pod")
        self._later(f"POST pods/{name}/binding", self._session.post(self._path(pod, namespace, name, "binding"),
                                                                     json=body))

    def _later(self, what: str, request) -> None:
        """Send one write in the background; a refusal other than gone (404) or changed (409) is recorded."""
        async def go() -> None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with request as r:
                    if r.status >= 400 and r.status not in (404, 409):
                        self.errors.append(f"{what}: {r.status} {(await r.text())[:200]}")
        self._spawn(go())

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _older(new: dict, old: dict) -> bool:
    """Whether ``new`` is an earlier revision than ``old`` (etcd revisions: kube-apiserver's are integers)."""
    a, b = new["metadata"].get("resourceVersion", ""), old["metadata"].get("resourceVersion", "")
    return a.isdigit() and b.isdigit() and int(a) < int(b)
