"""Cluster access for the stages: plain JSON over the real ``kubernetes`` client's HTTP layer.

``ClusterReader`` can only read: it has no mutating method and its transport refuses any
verb but GET, so audit mode cannot change a cluster by construction. ``Cluster`` adds
server-side apply (field manager ``ghcr2gitea``, every object labelled with the stage that
owns it), create, patch and delete.

Transient failures (connection refused while a K3s server restarts, 429/500/503/504,
timeouts) are retried with backoff until ``patience`` runs out; ``on_retry`` hears about
each retry so the UI and the headless output can say what is going on.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import urllib3
from kubernetes import client

from . import ownership as O
from .kube import ClusterUnauthorized, ClusterUnreachable, api_client

log = logging.getLogger(__name__)

FIELD_MANAGER = "ghcr2gitea"
MANAGED_BY = {"app.kubernetes.io/managed-by": "ghcr2gitea"}
STAGE_LABEL = "ghcr2gitea.io/stage"
RETRY_STATUSES = {429, 500, 502, 503, 504}
USER_AGENT = f"ghcr2gitea/0.1 (pid {os.getpid()})"


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


KINDS = {k.kind: k for k in (
    Kind("v1", "Namespace", "namespaces", False), Kind("v1", "Node", "nodes", False),
    Kind("v1", "Pod", "pods"), Kind("v1", "Service", "services"), Kind("v1", "Secret", "secrets"),
    Kind("v1", "ConfigMap", "configmaps"), Kind("v1", "Event", "events"),
    Kind("v1", "ServiceAccount", "serviceaccounts"), Kind("coordination.k8s.io/v1", "Lease", "leases"),
    Kind("apps/v1", "Deployment", "deployments"), Kind("apps/v1", "StatefulSet", "statefulsets"),
    Kind("apps/v1", "DaemonSet", "daemonsets"), Kind("networking.k8s.io/v1", "Ingress", "ingresses"),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    Kind("batch/v1", "Job", "jobs"), Kind("batch/v1", "CronJob", "cronjobs"),
)}


class ApiError(Exception):
    """A Kubernetes API error with its Status fields.

    A 422 (Invalid: an immutable field, a value the API refuses) reads as the object and its fields,
    from the Status's ``details.causes``: ``Secret default/x: field type: field is immutable``.
    """

    def __init__(self, status: int, reason: str, message: str, causes: list[dict] | None = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        self.causes = [c for c in causes or [] if isinstance(c, dict)]
        self.target = ""  # "Secret default/x": set by the Cluster method that sent the request
        self.retried = False  # the request had been sent before: a 409 may be our own first attempt

    @property
    def forbidden(self) -> str:
        """A 403 as ``forbidden: <verb> <resource>`` (from RBAC's message: ``User "u" cannot get resource
        "secrets" in API group "" in the namespace "default"``); empty for any other error."""
        if self.status != 403:
            return ""
        m = _RBAC_DENIED.search(self.message or "")
        if m is None:
            return "forbidden"
        verb, resource, sub, group, where = m.groups()
        what = resource + (f"/{sub}" if sub else "") + (f".{group}" if group else "")
        scope = f" in namespace {where}" if where else ""
        return f"forbidden: {verb} {what}{scope}"

    def __str__(self) -> str:
        if self.status == 403 and self.forbidden != "forbidden":
            return f"{self.forbidden} ({self.target + ': ' if self.target else ''}{self.message})"
        if self.status == 422 and self.causes:
            fields = "; ".join(f"field {c.get('field') or '?'}: {_cause_text(c.get('message', ''))}"
                               for c in self.causes[:5])
            return f"{self.target or 'the object'}: {fields} (the API refused the change: HTTP 422 {self.reason})"
        text = f"{self.status} {self.reason}: {self.message}"
        return f"{self.target}: {text}" if self.target else text


class ReadOnlyViolation(Exception):
    """Something tried to change the cluster through a read-only connection."""


def kind_of(obj_or_kind: dict | str) -> Kind:
    name = obj_or_kind if isinstance(obj_or_kind, str) else obj_or_kind["kind"]
    return KINDS[name]


class ClusterReader:
    """Read-only access. Has no create/apply/patch/delete; refuses any verb but GET."""

    def _may_write(self, method: str, path: str) -> bool:
        return False

    def __init__(self, api: client.ApiClient, *, patience: float = 120.0,
                 on_retry: Callable[[str], None] | None = None, request_timeout: float = 30.0):
        self.api = api
        self.patience = patience
        self.request_timeout = request_timeout  # one call's read timeout; then it is retried
        self.on_retry = on_retry or (lambda msg: None)
        self.server = api.configuration.host
        self.requests = 0
        self.max_delay = 1.0  # backoff cap; the rolling restart lowers it while an API server restarts
        self.retry_note = ""  # why the API may be away right now, said with each retry
        # Called before every mutating request (the cluster lock installs its check: a run that lost
        # its Lease must not write anything more); raises to stop the request.
        self.fence: Callable[[], None] | None = None
        self.halt: Callable[[], None] | None = None  # called before EVERY request (no I/O): raises to stop the run
        self.adopted: set[O.Ref] = set()  # objects the operator adopted explicitly (--adopt / typed in the UI)

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None, **kw) -> ClusterReader:
        return cls(api_client(kubeconfig, context), **kw)

    def close(self) -> None:
        self.api.close()

    def sibling(self, **kw) -> ClusterReader:
        """Another connection of the same class on the same API client, under the same fence."""
        other = type(self)(self.api, **kw)
        other.fence = lambda: self.fence() if self.fence is not None else None
        other.halt = lambda: self.halt() if self.halt is not None else None
        return other

    # ---------------------------------------------------------------- transport
    def _url(self, path: str, query: dict | None) -> str:
        q = {k: v for k, v in (query or {}).items() if v is not None}
        return self.server.rstrip("/") + path + (("?" + urlencode(q)) if q else "")

    def _headers(self, content_type: str | None = None, accept: str = "application/json") -> dict:
        _, _, headers, _, _ = self.api.param_serialize("GET", "/", header_params={"Accept": accept},
                                                       auth_settings=["BearerToken"])
        headers["User-Agent"] = USER_AGENT  # names this process: the request log tells runs apart
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def request(self, method: str, path: str, *, query: dict | None = None, body=None,
                content_type: str | None = None, timeout: float | None = None, raw: bool = False,
                retry: bool = True, fence: bool = True):
        """One API call with retries; returns parsed JSON (or text with raw=True).

        A mutating call first passes ``self.fence`` (unless ``fence=False``: the lock's own writes)."""
        if method != "GET" and not self._may_write(method, path):
            raise ReadOnlyViolation(f"{method} {path} refused: this connection is read-only (audit)")
        if self.halt is not None:
            self.halt()
        if method != "GET" and fence and self.fence is not None:
            self.fence()
        deadline = time.monotonic() + self.patience
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                self.requests += 1
                resp = self.api.rest_client.request(
                    method, self._url(path, query), headers=self._headers(content_type),
                    body=body, _request_timeout=(5, timeout or self.request_timeout))
                data = resp.read() if hasattr(resp, "read") else resp.data
                status = resp.status
            except (urllib3.exceptions.HTTPError, OSError, client.ApiException) as e:
                status, data, err = None, b"", e
                if _tls_refused(e):  # not transient: retrying cannot make a wrong CA right
                    raise ClusterUnreachable(
                        f"cluster API {self.server}: its TLS certificate is not trusted by the kubeconfig's CA "
                        f"({_short(e)}); check certificate-authority(-data) of this context, or that the "
                        "kubeconfig points at the right cluster") from None
            else:
                err = None
            if status is not None and status < 400:
                if raw:
                    return data.decode("utf-8", errors="replace")
                return json.loads(data) if data else {}
            if status == 401:
                raise ClusterUnauthorized(
                    f"cluster API {self.server} refused the kubeconfig's credentials (401 Unauthorized): the "
                    "user's token or client certificate is wrong or expired; refresh the kubeconfig "
                    "(e.g. copy /etc/rancher/k3s/k3s.yaml again) and run the same command again")
            if status is not None and status not in RETRY_STATUSES:
                e = _api_error(status, data)
                e.retried = attempt > 1
                raise e
            if not retry or time.monotonic() >= deadline:
                if status is not None:
                    raise _api_error(status, data)
                raise ClusterUnreachable(f"cluster API {self.server} unreachable after {attempt} attempts: "
                                         f"{_short(err)}; check the cluster, then run the same command again "
                                         "(it resumes where the cluster is)")
            why = f"HTTP {status}" if status is not None else _short(err)
            self.on_retry(f"API {why}{self.retry_note}, retrying {method} {path}")
            time.sleep(delay * (0.75 + random.random() / 2))
            delay = min(delay * 1.6, self.max_delay or 1.0)

    # ---------------------------------------------------------------- reads
    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        try:
            return self.request("GET", kind_of(kind).path(namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, *, labels: str | None = None,
             fields: str | None = None) -> list[dict]:
        return self.list_with_rv(kind, namespace, labels=labels, fields=fields)[0]

    def list_with_rv(self, kind: str, namespace: str | None = None, *, labels: str | None = None,
                     fields: str | None = None) -> tuple[list[dict], str]:
        data = self.request("GET", kind_of(kind).path(namespace),
                            query={"labelSelector": labels, "fieldSelector": fields})
        return data.get("items") or [], data.get("metadata", {}).get("resourceVersion", "")

    def watch(self, kind: str, namespace: str | None = None, *, resource_version: str | None = None,
              labels: str | None = None, fields: str | None = None, timeout: float = 60) -> Iterator[tuple[str, dict]]:
        """Stream (type, object) events until the server ends the watch; raises ApiError(410) when expired."""
        query = {"watch": "true", "resourceVersion": resource_version, "labelSelector": labels,
                 "fieldSelector": fields, "timeoutSeconds": int(timeout), "allowWatchBookmarks": "true"}
        if self.halt is not None:
            self.halt()
        resp = self.api.rest_client.pool_manager.request(
            "GET", self._url(kind_of(kind).path(namespace), query), headers=self._headers(),
            preload_content=False, timeout=urllib3.Timeout(connect=5, read=timeout + 10))
        self.requests += 1
        try:
            if resp.status >= 400:
                raise _api_error(resp.status, resp.read())
            buf = b""
            for chunk in resp.stream(4096):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    if ev.get("type") == "ERROR":
                        st = ev.get("object") or {}
                        raise ApiError(st.get("code", 500), st.get("reason", ""), st.get("message", ""))
                    if self.halt is not None:
                        self.halt()
                    yield ev["type"], ev["object"]
        finally:
            resp.release_conn()

    def pod_log(self, name: str, namespace: str, container: str | None = None) -> str:
        return self.request("GET", KINDS["Pod"].path(namespace, name, "log"), query={"container": container},
                            raw=True)

    def version(self) -> dict:
        return self.request("GET", "/version")

    def readyz(self) -> bool:
        try:
            self.request("GET", "/readyz", raw=True, retry=False, timeout=5)
            return True
        except (ApiError, ClusterUnreachable):
            return False

    def server_version(self) -> str:
        return self.version().get("gitVersion", "")


class ProbingReader(ClusterReader):
    """Audit with --node-probes: still read-only, except short-lived probe Pods it creates and deletes."""

    def _may_write(self, method: str, path: str) -> bool:
        parts = path.split("?")[0].rstrip("/").split("/")
        return (method == "POST" and parts[-1] == "pods") or (method == "DELETE" and len(parts) > 1
                                                               and parts[-2] == "pods")

    def create(self, obj: dict, stage: str) -> dict:
        if obj.get("kind") != "Pod":
            raise ReadOnlyViolation(f"audit may only create probe pods, not a {obj.get('kind')}")
        return Cluster.create(self, obj, stage)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        if kind != "Pod":
            raise ReadOnlyViolation(f"audit may only delete its probe pods, not a {kind}")
        return Cluster.delete(self, kind, name, namespace)


class Cluster(ClusterReader):
    """Read-write access: server-side apply under field manager ``ghcr2gitea``."""

    def _may_write(self, method: str, path: str) -> bool:
        return True

    def apply(self, obj: dict, stage: str, *, dry_run: bool = False) -> dict:
        """Server-side apply, creating or updating; labels the object with its owner and stage.

        Refuses (``NotOwned``) an existing object the wizard does not own and was not told to adopt:
        ``force`` takes over only fields of the wizard's own (or adopted) objects. The write is pinned to what
        the ownership check saw, so nothing slips in between the check and the write: an object found absent
        is applied with a resourceVersion no object has (``CREATE_ONLY``: created if still absent, refused if
        another team made it meanwhile), one found ours with its uid (refused if it was replaced meanwhile);
        either refusal checks ownership again.
        """
        obj = label(obj, stage)
        md = obj["metadata"]
        if dry_run:
            return self._apply(obj, dry_run=True)
        for _ in range(3):
            live = guard(self, obj["kind"], md["name"], md.get("namespace"), "apply")
            pin = {"resourceVersion": CREATE_ONLY} if live is None else {"uid": live["metadata"]["uid"]}
            try:
                return self._apply({**obj, "metadata": {**md, **pin}})
            except ApiError as e:
                if not _precondition_failed(e):
                    raise
        raise ApiError(409, "Conflict", f"{O.Ref(obj['kind'], md.get('namespace') or '', md['name'])} kept changing "
                       "while the wizard wrote it (created, replaced or deleted by someone else); run again")

    def _apply(self, obj: dict, *, dry_run: bool = False) -> dict:
        md = obj["metadata"]
        with _target(obj["kind"], md["name"], md.get("namespace")):
            return self.request("PATCH", kind_of(obj).path(md.get("namespace"), md["name"]),
                                query={"fieldManager": FIELD_MANAGER, "force": "true",
                                       "dryRun": "All" if dry_run else None},
                                body=json.dumps(obj), content_type="application/apply-patch+yaml")

    def create(self, obj: dict, stage: str) -> dict:
        obj = label(obj, stage)
        k = kind_of(obj)
        md = obj["metadata"]
        try:
            return self.request("POST", k.path(md.get("namespace")), body=obj,
                                query={"fieldManager": FIELD_MANAGER}, content_type="application/json")
        except ApiError as e:
            # The connection dropped after the server took our first attempt (an API server
            # restarting): the object that "already exists" is ours if it carries our marks.
            if e.status == 409 and e.retried:
                live = self.get(obj["kind"], md["name"], md.get("namespace"))
                if live is not None and _same_origin(live, obj):
                    return live
            raise

    def patch(self, kind: str, name: str, namespace: str | None, patch: dict | list, *,
              patch_type: str = "strategic", named_by_plan: bool = False) -> dict:
        """A patch of the wizard's own object; ``named_by_plan``: an operator's object the plan names as in
        scope (a workload whose images it migrates, the runner's Role), changed field by field, never taken over."""
        ctype = {"strategic": "application/strategic-merge-patch+json", "merge": "application/merge-patch+json",
                 "json": "application/json-patch+json"}[patch_type]
        if not named_by_plan:
            guard(self, kind, name, namespace, "patch")
        with _target(kind, name, namespace):
            return self.request("PATCH", kind_of(kind).path(namespace, name), body=patch, content_type=ctype,
                                query={"fieldManager": FIELD_MANAGER})

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete one of the wizard's objects; False when it was already gone. Refuses (``NotOwned``) any other;
        the uid precondition makes sure the object checked is the one deleted."""
        live = guard(self, kind, name, namespace, "delete")
        if live is None:
            return False
        try:
            self.request("DELETE", kind_of(kind).path(namespace, name),
                         body={"propagationPolicy": "Background", "gracePeriodSeconds": 0,
                               "preconditions": {"uid": live["metadata"].get("uid")}},
                         content_type="application/json")
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            if e.status == 409 and "precondition" in e.message.lower():
                return False  # replaced by someone else meanwhile: that one is not ours to delete
            raise


def guard(cluster: ClusterReader, kind: str, name: str, namespace: str | None, verb: str) -> dict | None:
    """The write layer's half of the ownership rule: the live object, or NotOwned when it is not ours."""
    live = cluster.get(kind, name, namespace)
    ref = O.Ref(kind, (namespace or "") if kind_of(kind).namespaced else "", name)
    if O.conflict(live, ref, cluster.adopted):
        raise O.NotOwned(ref, live, verb)
    return live


class _target:
    """Name the object in an ApiError raised while writing it."""

    def __init__(self, kind: str, name: str, namespace: str | None):
        self.text = str(O.Ref(kind, namespace or "", name))

    def __enter__(self):
        return self

    def __exit__(self, etype, e, tb):
        if isinstance(e, ApiError) and not e.target:
            e.target = self.text
        return False


def _cause_text(message: str) -> str:
    """'Invalid value: "kubernetes.io/tls": field is immutable' -> 'field is immutable' (values may be long)."""
    m = re.match(r'^Invalid value: .*: ([^:]+)$', message or "", re.S)
    return (m.group(1) if m else message or "invalid").strip()[:200]


# etcd's first revision is its empty store's (the first key written gets 2; kine's first row is its compaction
# key), so no object ever has resourceVersion 1: an apply carrying it may only create (tests/real oracle)
CREATE_ONLY = "1"


def _precondition_failed(e: ApiError) -> bool:
    """An apply refused for its pin: the object appeared ("has been modified"), or is another one (uid)."""
    text = e.message or ""
    return (e.status == 409 and ("has been modified" in text or "uid mismatch" in text)) or \
        (e.status == 422 and "metadata.uid" in text)


def _same_origin(live: dict, sent: dict) -> bool:
    labels, want = live["metadata"].get("labels") or {}, sent["metadata"].get("labels") or {}
    if "ghcr2gitea.io/run" in want:
        return labels.get("ghcr2gitea.io/run") == want["ghcr2gitea.io/run"]
    if sent["kind"] == "Lease":
        return (live.get("spec") or {}).get("holderIdentity") == sent["spec"].get("holderIdentity")
    return False


def label(obj: dict, stage: str) -> dict:
    obj = json.loads(json.dumps(obj))
    md = obj.setdefault("metadata", {})
    md["labels"] = {**(md.get("labels") or {}), **MANAGED_BY, STAGE_LABEL: stage}
    return obj


_RBAC_DENIED = re.compile(r'cannot (\S+) resource "([^"]+)"(?: subresource "([^"]+)")?(?: in API group "([^"]*)")?'
                          r'(?: in the namespace "([^"]+)")?')


def _api_error(status: int, data: bytes) -> ApiError:
    try:
        st = json.loads(data)
        details = st.get("details") if isinstance(st.get("details"), dict) else {}
        return ApiError(status, st.get("reason", ""), st.get("message", ""), details.get("causes"))
    except (ValueError, AttributeError):
        return ApiError(status, "", (data or b"").decode("utf-8", errors="replace")[:200])


def _tls_refused(err: BaseException) -> bool:
    text = f"{err!r} {err}"
    return "CERTIFICATE_VERIFY_FAILED" in text or "SSLCertVerificationError" in text or \
        "certificate verify failed" in text


def _short(err: BaseException | None) -> str:
    text = str(err or "")
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if _tls_refused(err) if err is not None else False:
        return "certificate verify failed" + (": self-signed certificate in chain" if "self-signed" in text
                                              or "self signed" in text else "")
    return text.split("(Caused by")[-1].strip(" )")[:120] or type(err).__name__
