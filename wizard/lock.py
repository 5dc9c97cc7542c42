"""One run at a time per cluster: a coordination.k8s.io Lease held while the wizard changes things.

The holder identity says who (user@host), which process and since when, so a second run
can tell the operator. A lease whose holder stopped renewing it for longer than its TTL is
stale and may be taken over — only when the operator says so.

The lease FENCES the run: once acquired, every mutating request of this run's connection
first checks that the Lease still names this run as holder at the resourceVersion this run
last wrote (``ClusterLock.check``, installed as ``cluster.fence``). A run that was suspended
past the TTL (a laptop asleep) and taken over by another run stops at once with ``LockLost``
and sends nothing: renewals, too, are compare-and-swap on that resourceVersion.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from .cluster import ApiError, Cluster, label
from .problem import Failure

LEASE_NAME = "ghcr2gitea"
LEASE_NAMESPACE = "kube-system"
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{LEASE_NAME}"


def _ttl() -> int:
    # GHCR2GITEA_LEASE_TTL: seconds without renewal before a lease counts as stale (default 60)
    text = os.environ.get("GHCR2GITEA_LEASE_TTL", "")
    return int(text) if text.isascii() and text.isdigit() and int(text) >= 2 else 60


TTL = _ttl()
RENEW_EVERY = max(1.0, TTL / 4)


class LockHeld(Failure):
    """Another run holds the cluster; the message says who and since when."""

    fix = "wait for the other run to finish, or stop it; then try again"


class LockLost(BaseException):
    """This run no longer holds the cluster's Lease (taken over while it was suspended): it must stop at once.

    A BaseException, like KeyboardInterrupt: the many ``except Exception`` that keep a wait loop or a
    best-effort write going must not keep a run going that lost its lock. The CLI and the session
    catch it by name."""


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
        self.rv = ""  # the Lease's resourceVersion as this run last wrote it
        self.lost = ""  # why this run no longer holds the lock ('' while it does)
        self._unanswered = False  # a renewal got no answer: it may have landed (the Lease's rv moved by us)
        self._body: dict = {}
        self._mu = threading.Lock()
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
                written = self.cluster.create(body, "lock")
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
                written = self.cluster.request("PUT", LEASE_PATH, body=body, content_type="application/json",
                                               fence=False)
            except ApiError as e:
                if e.status == 409:
                    raise LockHeld("another ghcr2gitea run took the lock just now") from None
                raise
        self._body = written
        self.rv = written["metadata"]["resourceVersion"]
        self.cluster.fence = self.check
        self.cluster.halt = self.raise_if_lost
        self._thread = threading.Thread(target=self._renew, name="lease-renew", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- fencing
    def raise_if_lost(self) -> None:
        """Before every request, reads too (no I/O): a run the renewer found taken over stops at once."""
        if self.lost:
            raise LockLost(self.lost)

    def check(self) -> None:
        """Raise LockLost unless the Lease still names this run at the resourceVersion it last wrote."""
        with self._mu:
            self._confirm()

    def _confirm(self) -> None:
        if self.lost:
            raise LockLost(self.lost)
        lease = self.cluster.get("Lease", LEASE_NAME, LEASE_NAMESPACE)
        spec = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        rv = (lease or {}).get("metadata", {}).get("resourceVersion", "")
        if lease is not None and holder == self.me and rv != self.rv and self._unanswered:
            # our own renewal landed though its answer was lost (an API server restarting)
            self._body, self.rv, self._unanswered = lease, rv, False
        if lease is None or holder != self.me or rv != self.rv:
            who = f"it is now held by {holder}" if holder and holder != self.me else \
                "the Lease was released or rewritten by another run"
            self.lost = (f"this run lost the cluster lock ({who}): another run took over while this one was "
                         "suspended or cut off; stopping at once without changing anything more — check what the "
                         "other run did, then run the same command again if needed")
            self._stop.set()
            raise LockLost(self.lost)

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY):
            try:
                with self._mu:
                    self._confirm()  # compare first: a suspended run that wakes must not write at all
                    body = json.loads(json.dumps(self._body))
                    body["metadata"]["resourceVersion"] = self.rv
                    body["spec"]["renewTime"] = _micro(_now())
                    try:
                        written = self.cluster.request("PUT", LEASE_PATH, body=body, retry=False,
                                                       content_type="application/json", fence=False)
                    except ApiError as e:
                        if e.status == 409:  # someone wrote the Lease between our read and our write
                            self._confirm()
                        self._unanswered = e.status >= 500
                        raise
                    except Exception:
                        self._unanswered = True
                        raise
                    self._body, self.rv = written, written["metadata"]["resourceVersion"]
                    self._unanswered = False
            except LockLost:
                return
            except Exception:  # noqa: BLE001 - the API may be away while a server restarts; next tick retries
                pass

    def release(self) -> None:
        self._stop.set()
        if self.cluster.fence == self.check:
            self.cluster.fence = None
        if self.cluster.halt == self.raise_if_lost:
            self.cluster.halt = None
        if self.lost:
            return  # not ours any more: leave it to its holder
        try:
            with self._mu:
                self._confirm()
                self.cluster.request("DELETE", LEASE_PATH, fence=False, content_type="application/json",
                                     body={"preconditions": {"resourceVersion": self.rv}})
        except Exception:  # noqa: BLE001 - releasing is best effort; a stale lease can be taken over
            pass

    def __enter__(self) -> ClusterLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
