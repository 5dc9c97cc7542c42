"""Live views for the wizard's cluster panel: nodes and the wizard's own pods, from list + watch.

Plain JSON over ``ClusterReader`` (no client model objects: a 1000-node list converts about
twice as fast, and heartbeat events cost little): list, then watch from that resourceVersion; relist on 410 Gone; reconnect with backoff while the API
is away (a K3s server restarting). Read-only by construction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cluster import ApiError, ClusterReader
from .kube import NodeInfo

log = logging.getLogger(__name__)

SELECTOR = "ghcr2gitea.io/role"  # every pod the wizard starts carries it (nodeexec, pull tests)


@dataclass(frozen=True)
class WizardPod:
    name: str
    namespace: str
    node: str
    role: str
    phase: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def running(self) -> bool:
        return self.phase in ("Pending", "Running")

    @classmethod
    def from_pod(cls, pod: dict) -> WizardPod:
        md, spec, st = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        phase = "Terminating" if md.get("deletionTimestamp") else st.get("phase", "Pending")
        return cls(md["name"], md.get("namespace", ""), spec.get("nodeName") or "",
                   (md.get("labels") or {}).get(SELECTOR, ""), phase)


def _name(obj: dict) -> str:
    md = obj["metadata"]
    return f"{md['namespace']}/{md['name']}" if md.get("namespace") else md["name"]


class ListWatch:
    """``on_change(changed, deleted_keys)`` from a thread, with ``convert(obj)`` applied to each object."""

    def __init__(self, reader: ClusterReader, kind: str, convert: Callable[[dict], Any],
                 on_change: Callable[[list, list[str]], None], on_status: Callable[[str], None] | None = None,
                 labels: str | None = None):
        self.reader, self.kind, self.convert, self.labels = reader, kind, convert, labels
        self.on_change = on_change
        self.on_status = on_status or (lambda s: None)
        self._stop = threading.Event()

    def start(self) -> ListWatch:
        threading.Thread(target=self._run, name=f"watch-{self.kind.lower()}", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        backoff, rv, known = 0.2, None, set()
        while not self._stop.is_set():
            try:
                if rv is None:
                    items, rv = self.reader.list_with_rv(self.kind, labels=self.labels)
                    now = {_name(o) for o in items}
                    self.on_status("live")  # first: whoever sees the nodes sees the status with them
                    self.on_change([self.convert(o) for o in items], sorted(known - now))
                    known = now
                healthy = False
                for typ, obj in self.reader.watch(self.kind, resource_version=rv, labels=self.labels, timeout=300):
                    if self._stop.is_set():
                        return
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if not healthy:
                        healthy = True
                        self.on_status("live")
                    if typ == "BOOKMARK":
                        continue
                    key = _name(obj)
                    if typ == "DELETED":
                        known.discard(key)
                        self.on_change([], [key])
                    else:
                        known.add(key)
                        self.on_change([self.convert(obj)], [])
                backoff = 0.2
            except ApiError as e:
                if e.status == 410:
                    rv = None  # compacted: relist
                    continue
                self.on_status(f"API error {e.status}, retrying")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5)
            except Exception as e:  # noqa: BLE001 - connection refused while a server restarts, timeouts
                if self._stop.is_set():
                    return
                log.debug("%s watch: %s", self.kind, e)
                self.on_status("API unreachable, retrying")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5)


def node_watch(api, on_change, on_status=None) -> ListWatch:
    """Nodes as ``NodeInfo``; ``api`` is a kubernetes ApiClient (see ``kube.api_client``)."""
    return ListWatch(ClusterReader(api, patience=5), "Node", NodeInfo.from_node, on_change, on_status)


def pod_watch(api, on_change) -> ListWatch:
    """The wizard's pods (label ``ghcr2gitea.io/role``) in every namespace, as ``WizardPod``."""
    return ListWatch(ClusterReader(api, patience=5), "Pod", WizardPod.from_pod, on_change, labels=SELECTOR)
