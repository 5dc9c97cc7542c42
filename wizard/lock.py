"""One run at a time per cluster: a coordination.k8s.io Lease held while the wizard changes things.

The holder identity says who (user@host), which process and since when, so a second run
can tell the operator. A lease whose holder stopped renewing it for longer than its TTL is
stale and may be taken over — only when the operator says so.
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from .cluster import ApiError, Cluster, label

LEASE_NAME = "ghcr2gitea"
LEASE_NAMESPACE = "kube-system"
TTL = 60  # seconds without renewal before a lease counts as stale
RENEW_EVERY = 15


class LockHeld(Exception):
    """Another run holds the cluster; the message says who and since when."""


def _now() -> datetime:
    return datetime.now(UTC)


def _micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def identity() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} pid={os.getpid()}"


@dataclass
class Holder:
    identity: str
    acquired: datetime | None
    renewed: datetime | None

    @property
    def stale(self) -> bool:
        return self.renewed is None or (_now() - self.renewed).total_seconds() > TTL

    @property
    def dead_here(self) -> bool:
        """Held by a process of this machine that no longer exists (a run that was killed)."""
        who, _, pid = self.identity.partition(" pid=")
        if who.split("@")[-1] != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self) -> str:
        since = f"since {self.acquired:%Y-%m-%d %H:%M:%S} UTC" if self.acquired else ""
        age = f", last renewed {int((_now() - self.renewed).total_seconds())} s ago" if self.renewed else ""
        return f"{self.identity} {since}{age}".strip()


class ClusterLock:
    def __init__(self, cluster: Cluster, *, take_over_stale: bool = False):
        self.cluster = cluster
        self.take_over_stale = take_over_stale
        self.me = identity()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> Holder | None:
        lease = self.cluster.get("Lease", LEASE_NAME, LEASE_NAMESPACE)
        spec = (lease or {}).get("spec") or {}
        if not spec.get("holderIdentity"):
            return None
        return Holder(spec["holderIdentity"], _parse(spec.get("acquireTime")), _parse(spec.get("renewTime")))

    def acquire(self) -> None:
        now = _micro(_now())
        spec = {"holderIdentity": self.me, "leaseDurationSeconds": TTL, "acquireTime": now, "renewTime": now}
        lease = self.cluster.get("Lease", LEASE_NAME, LEASE_NAMESPACE)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": LEASE_NAMESPACE}, "spec": spec}
        if lease is None:
            try:
                self.cluster.create(body, "lock")
            except ApiError as e:
                if e.status == 409:
                    raise LockHeld(f"another ghcr2gitea run took the lock just now: {self.holder().describe()}") \
                        from None
                raise
        else:
            current = self.holder()
            if current and current.identity != self.me and not current.dead_here:
                if not current.stale:
                    raise LockHeld(f"another ghcr2gitea run holds this cluster: {current.describe()}; wait for it, "
                                   f"or stop it")
                if not self.take_over_stale:
                    raise LockHeld(f"a stale lock is held by {current.describe()} (no renewal for over {TTL} s); "
                                   "if that run is gone, run again with --take-over-stale-lock")
            body = label(body, "lock")  # a PUT replaces the labels: keep the mark that lets this run renew it
            body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
            try:
                self.cluster.request("PUT", f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/"
                                     f"{LEASE_NAME}", body=body, content_type="application/json")
            except ApiError as e:
                if e.status == 409:
                    raise LockHeld("another ghcr2gitea run took the lock just now") from None
                raise
        self._thread = threading.Thread(target=self._renew, name="lease-renew", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY):
            try:
                self.cluster.patch("Lease", LEASE_NAME, LEASE_NAMESPACE, {"spec": {"renewTime": _micro(_now())}},
                                   patch_type="merge")
            except Exception:  # noqa: BLE001 - the API may be away while a server restarts; next tick retries
                pass

    def release(self) -> None:
        self._stop.set()
        try:
            current = self.holder()
            if current and current.identity == self.me:
                self.cluster.delete("Lease", LEASE_NAME, LEASE_NAMESPACE)
        except Exception:  # noqa: BLE001 - releasing is best effort; a stale lease can be taken over
            pass

    def __enter__(self) -> ClusterLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
