"""Talking to the cluster with the real ``kubernetes`` client: connecting, and live node state.

kubeconfig is resolved as kubectl does it: an explicit path, else ``KUBECONFIG``, else
``~/.kube/config``, else the in-cluster service account.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)


class ClusterUnreachable(Exception):
    """The kubeconfig or context cannot be used; the message names it and the fix."""


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    if path is None and Path("~/.kube/config").expanduser().exists():
        path = str(Path("~/.kube/config").expanduser())
    if path is None:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            raise ClusterUnreachable("no kubeconfig: pass --kubeconfig FILE or set KUBECONFIG") from None
    if not Path(path).exists():
        raise ClusterUnreachable(f"kubeconfig {path}: file not found; pass --kubeconfig FILE or set KUBECONFIG")
    try:
        return config.new_client_from_config(config_file=path, context=context, persist_config=False)
    except config.ConfigException as e:
        where = f"context {context!r}" if context else f"kubeconfig {path}"
        raise ClusterUnreachable(f"{where}: {e}; check `kubectl config get-contexts`") from None


@dataclass(frozen=True)
class NodeInfo:
    """What the live view shows of a node."""

    name: str
    role: str  # server | agent
    ready: str  # True | False | Unknown
    kubelet: str
    internal_ip: str

    @classmethod
    def from_node(cls, node: dict) -> NodeInfo:
        md, st = node["metadata"], node.get("status") or {}
        labels = md.get("labels") or {}
        role = "server" if "node-role.kubernetes.io/control-plane" in labels else "agent"
        ready = next((c["status"] for c in st.get("conditions") or [] if c["type"] == "Ready"), "Unknown")
        ip = next((a["address"] for a in st.get("addresses") or [] if a["type"] == "InternalIP"), "")
        return cls(md["name"], role, ready, (st.get("nodeInfo") or {}).get("kubeletVersion", ""), ip)


class NodeWatch:
    """Keeps a live view of the cluster's nodes: list, then watch from that resourceVersion.

    Reconnects with backoff when the API goes away (a K3s server restart), and relists
    when the watch answers 410 Gone. ``on_change(added_or_modified, deleted_names)`` is
    called from the watch thread with batches of changes.
    """

    def __init__(self, api: client.ApiClient, on_change: Callable[[list[NodeInfo], list[str]], None],
                 on_status: Callable[[str], None] | None = None):
        self.core = client.CoreV1Api(api)
        self.on_change = on_change
        self.on_status = on_status or (lambda s: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: watch.Watch | None = None

    def start(self) -> NodeWatch:
        self._thread = threading.Thread(target=self._run, name="node-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._watch:
            self._watch.stop()

    def _run(self) -> None:
        backoff = 0.2
        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    lst = self.core.list_node(_request_timeout=10)
                    rv = lst.metadata.resource_version
                    nodes = [NodeInfo.from_node(api_dict(n)) for n in lst.items]
                    self.on_change(nodes, [])
                    self.on_status("live")
                self._watch = w = watch.Watch()
                for ev in w.stream(self.core.list_node, resource_version=rv, allow_watch_bookmarks=True,
                                   timeout_seconds=300, _request_timeout=(5, 330)):
                    obj = ev["raw_object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] == "BOOKMARK":
                        continue
                    if ev["type"] == "DELETED":
                        self.on_change([], [obj["metadata"]["name"]])
                    else:
                        self.on_change([NodeInfo.from_node(obj)], [])
                    if self._stop.is_set():
                        break
                backoff = 0.2
            except ApiException as e:
                if e.status == 410:
                    rv = None  # compacted: relist
                    continue
                self.on_status(f"API error {e.status}, retrying")
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)
            except Exception as e:  # noqa: BLE001 - connection refused while a server restarts, timeouts
                if self._stop.is_set():
                    break
                log.debug("node watch: %s", e)
                self.on_status("API unreachable, retrying")
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)


def api_dict(obj) -> dict:
    """A client model as the API's JSON (camelCase keys)."""
    return client.ApiClient().sanitize_for_serialization(obj)
