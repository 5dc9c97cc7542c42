"""The sandbox's object store: what etcd plus the apiserver's registry layer do.

Server-set metadata, resourceVersions, optimistic concurrency, the four patch types,
server-side apply with field managers, label/field selectors, and watches that can be
resumed from a resourceVersion (410 Expired once it has been compacted away).

Everything runs on the sandbox's own event loop thread: no locks. Stored objects are never
mutated in place; a write builds a new dict, so readers may hold references.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import random
import re
import string
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import yaml

from . import patch as P
from . import schema
from .kinds import KINDS, Kind

HISTORY = 4096  # events kept per kind for watch resume (the watch cache window)
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
CLUSTER_SCOPED_NS = ""


def now_rfc3339(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    """An API failure, rendered as a metav1.Status body."""

    def __init__(self, code: int, reason: str, message: str, *, kind: Kind | None = None, name: str = "",
                 causes: list[dict] | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.kind, self.name, self.causes, self.retry_after = kind, name, causes, retry_after

    def status(self) -> dict:
        details: dict = {}
        if self.name:
            details["name"] = self.name
        if self.kind:
            details["kind"] = self.kind.plural
            if self.kind.group:
                details["group"] = self.kind.group
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after:
            details["retryAfterSeconds"] = self.retry_after
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if not self.reason:  # omitempty, as the apiserver encodes it
            del body["reason"]
        if details:
            body["details"] = details
        return body


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.resource} "{name}" not found', kind=kind, name=name)


def invalid(kind: Kind, name: str, problems: list[str]) -> ApiError:
    res = kind.kind if not kind.group else f"{kind.kind}.{kind.group}"
    causes = [{"reason": "FieldValueInvalid", "message": p, "field": p.split(":", 1)[0]} for p in problems]
    return ApiError(422, "Invalid", f'{res} "{name}" is invalid: ' + "; ".join(problems), kind=kind, name=name,
                    causes=causes)


def _check_resource_version(kind: Kind, old: dict, want: str | None) -> None:
    """An update or apply that names a resourceVersion is refused unless the object still has it."""
    if want and want != old["metadata"]["resourceVersion"]:
        name = old["metadata"].get("name", "")
        raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has '
                       "been modified; please apply your changes to the latest version and try again",
                       kind=kind, name=name)


def immutable_fields(kind: Kind, old: dict, new: dict) -> None:
    """The update validation the apiserver does for fields that cannot change in place: a 422 Invalid with
    details.causes, shaped and worded like kube-apiserver's (Secret type, Deployment/StatefulSet
    spec.selector, Service clusterIP)."""
    res = kind.kind if not kind.group else f"{kind.kind}.{kind.group}"
    name = old["metadata"].get("name", "")
    causes = []
    if kind.kind == "Secret":
        if (new.get("type") or "Opaque") != (old.get("type") or "Opaque"):
            causes.append(("FieldValueInvalid", "type", f'Invalid value: "{new.get("type") or "Opaque"}": field is '
                           "immutable"))
    elif kind.kind == "Deployment":
        if (new.get("spec") or {}).get("selector") != (old.get("spec") or {}).get("selector"):
            sel = json.dumps((new.get("spec") or {}).get("selector"), sort_keys=True)
            causes.append(("FieldValueInvalid", "spec.selector", f"Invalid value: {sel}: field is immutable"))
    elif kind.kind == "StatefulSet":
        if (new.get("spec") or {}).get("selector") != (old.get("spec") or {}).get("selector"):
            causes.append(("FieldValueForbidden", "spec", "Forbidden: updates to statefulset spec for fields other "
                           "than 'replicas', 'ordinals', 'template', 'updateStrategy', "
                           "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"))
    elif kind.kind == "Service":
        was, now = (old.get("spec") or {}).get("clusterIP"), (new.get("spec") or {}).get("clusterIP")
        if was and was != "None" and now not in (None, "", was):
            causes.append(("FieldValueInvalid", "spec.clusterIPs[0]",
                           f'Invalid value: []string{{"{now}"}}: may not change once set'))
    if causes:
        raise ApiError(422, "Invalid", f'{res} "{name}" is invalid: ' + ", ".join(f"{f}: {m}" for _, f, m in causes),
                       kind=kind, name=name, causes=[{"reason": r, "message": m, "field": f} for r, f, m in causes])


# ------------------------------------------------------------------------- selectors
_LABEL_REQ = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<val>[A-Za-z0-9_.-]*)|\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?\s*$"
)


def _split_selector(sel: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in sel:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_label_selector(sel: str | None) -> Callable[[dict], bool]:
    if not sel:
        return lambda labels: True
    reqs = []
    for part in _split_selector(sel):
        m = _LABEL_REQ.match(part)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: invalid label selector {part.strip()!r}")
        key, neg, op, val, setop = m["key"], m["neg"], m["op"], m["val"], m["setop"]
        if setop:
            values = {v.strip() for v in m["set"].split(",") if v.strip()}
            reqs.append((lambda ls, k=key, vs=values: k in ls and ls[k] in vs) if setop == "in"
                        else (lambda ls, k=key, vs=values: ls.get(k) not in vs))
        elif op in ("=", "=="):
            reqs.append(lambda ls, k=key, v=val: ls.get(k) == v)
        elif op == "!=":
            reqs.append(lambda ls, k=key, v=val: ls.get(k) != v)
        elif neg:
            reqs.append(lambda ls, k=key: k not in ls)
        else:
            reqs.append(lambda ls, k=key: k in ls)
    return lambda labels: all(r(labels) for r in reqs)


def _dotted(obj: dict, path: str):
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def parse_field_selector(sel: str | None) -> Callable[[dict], bool]:
    if not sel:
        return lambda obj: True
    reqs = []
    for part in sel.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {part!r}")
        path, op, val = m.groups()

        def req(obj, path=path, op=op, val=val):
            got = _dotted(obj, path)
            got = "" if got is None else str(got)
            return (got == val) if op != "!=" else (got != val)
        reqs.append(req)
    return lambda obj: all(r(obj) for r in reqs)


# ------------------------------------------------------------------------- watches
@dataclass
class Watcher:
    kind: Kind
    namespace: str | None
    labels: Callable[[dict], bool]
    fields: Callable[[dict], bool]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    closed: bool = False

    def matches(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        md = obj["metadata"]
        if self.namespace and md.get("namespace") != self.namespace:
            return False
        return self.labels(md.get("labels") or {}) and self.fields(obj)

    def offer(self, etype: str, old: dict | None, new: dict | None) -> None:
        was, now = self.matches(old), self.matches(new)
        if etype == "DELETED":
            if was:  # the deleted object as of its deletion: it carries the deletion's resourceVersion
                self.queue.put_nowait(("DELETED", new if new is not None else old))
        elif was and now:
            self.queue.put_nowait(("MODIFIED", new))
        elif now:
            self.queue.put_nowait(("ADDED", new))
        elif was:  # left the selection: watchers see it go
            self.queue.put_nowait(("DELETED", new))


@dataclass
class KindState:
    objects: dict[tuple[str, str], dict] = field(default_factory=dict)
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    compacted_rv: int = 0  # watches from an RV below this get 410 Expired
    watchers: list[Watcher] = field(default_factory=list)


Listener = Callable[[str, Kind, dict | None, dict | None], None]


class Store:
    def __init__(self, clock: Callable[[], float] = time.time, seed: int | None = None):
        self.clock = clock
        self.rv = 1
        self.kinds: dict[Kind, KindState] = {k: KindState() for k in KINDS}
        self.listeners: list[Listener] = []
        self.defaulters: dict[str, Callable[[dict, dict | None], None]] = {}
        self.rng = random.Random(seed)

    # ---------------------------------------------------------------- reads
    def get(self, kind: Kind, namespace: str, name: str) -> dict | None:
        return self.kinds[kind].objects.get((namespace if kind.namespaced else "", name))

    def must_get(self, kind: Kind, namespace: str, name: str) -> dict:
        obj = self.get(kind, namespace, name)
        if obj is None:
            raise not_found(kind, name)
        return obj

    def list(self, kind: Kind, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict]:
        lab, fld = parse_label_selector(label_selector), parse_field_selector(field_selector)
        out = []
        for (ns, _), obj in self.kinds[kind].objects.items():
            if namespace and ns != namespace:
                continue
            if lab(obj["metadata"].get("labels") or {}) and fld(obj):
                out.append(obj)
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out

    # ---------------------------------------------------------------- writes
    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _commit(self, kind: Kind, etype: str, old: dict | None, new: dict | None) -> None:
        st = self.kinds[kind]
        obj = new if new is not None else old
        key = (obj["metadata"].get("namespace", "") if kind.namespaced else "", obj["metadata"]["name"])
        if etype == "DELETED":
            st.objects.pop(key, None)
        else:
            st.objects[key] = new
        if len(st.history) == st.history.maxlen:
            st.compacted_rv = int(st.history[0][0])
        rv = int(obj["metadata"]["resourceVersion"])
        st.history.append((rv, etype, old, new))
        for w in st.watchers:
            w.offer(etype, old, new)
        for listener in self.listeners:
            listener(etype, kind, old, new)

    def compact(self) -> None:
        """Forget watch history, as etcd compaction does: older watches get 410 Gone."""
        for st in self.kinds.values():
            st.history.clear()
            st.compacted_rv = self.rv

    def _check_namespace(self, kind: Kind, namespace: str) -> None:
        if kind.namespaced and self.get(_NS, "", namespace) is None:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found', kind=_NS, name=namespace)

    def _prepare_new(self, kind: Kind, obj: dict, namespace: str) -> dict:
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        md = obj.setdefault("metadata", {})
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + "".join(self.rng.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        if kind.namespaced:
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        return obj

    def _validate(self, kind: Kind, obj: dict, strict: bool) -> None:
        name = obj["metadata"].get("name") or ""
        problems = []
        if not name:
            problems.append("metadata.name: Required value: name or generateName is required")
        elif not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
            problems.append(
                f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")
        problems += schema.validate(obj, strict=strict)
        if kind.kind == "Event" and kind.group == "":
            # as kube-apiserver's ValidateEvent: an event about a cluster-scoped object (a Node) lives in
            # "default" (or no namespace); one about a namespaced object lives in that object's namespace
            ns, about = obj["metadata"].get("namespace") or "", (obj.get("involvedObject") or {}).get("namespace") or ""
            if (not about and ns not in ("", "default")) or (about and about != ns):
                problems.append(f'involvedObject.namespace: Invalid value: "{about}": does not match event.namespace')
        if problems:
            raise invalid(kind, name, problems)

    def _ownership(self, kind: Kind):
        return partial(schema.list_info, kind.api_version, kind.kind)

    def _managed_entry(self, manager: str, operation: str, kind: Kind, paths: set, subresource: str = "") -> dict:
        entry = {"manager": manager, "operation": operation, "apiVersion": kind.api_version,
                 "time": now_rfc3339(self.clock()), "fieldsType": "FieldsV1", "fieldsV1": P.fields_v1(paths)}
        if subresource:
            entry["subresource"] = subresource
        return entry

    @staticmethod
    def _content_paths(obj: dict, info) -> set:
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
        md = body.get("metadata") or {}
        body["metadata"] = {k: md[k] for k in ("labels", "annotations", "ownerReferences", "finalizers") if k in md}
        if not body["metadata"]:
            body.pop("metadata")
        return P.field_set(body, info)

    def _record_update(self, kind: Kind, old: dict | None, new: dict, manager: str, subresource: str = "") -> None:
        """Give ``manager`` (operation Update) the fields this write changed."""
        info = self._ownership(kind)
        new_paths = self._content_paths(new, info) if subresource != "status" else P.field_set(
            {"status": new.get("status") or {}}, info)
        if old is None:
            changed = new_paths
        else:
            changed = {p for p in new_paths if _value_at(old, p) != _value_at(new, p)}
        managed = [dict(e) for e in (old or {}).get("metadata", {}).get("managedFields") or []]
        if changed:
            for e in managed:
                owned = P.parse_fields_v1(e.get("fieldsV1", {})) - changed
                e["fieldsV1"] = P.fields_v1(owned)
            managed = [e for e in managed if e["fieldsV1"]]
            entry = next((e for e in managed if e["manager"] == manager and e["operation"] == "Update"
                          and e.get("subresource", "") == subresource), None)
            if entry:
                entry["fieldsV1"] = P.fields_v1(P.parse_fields_v1(entry["fieldsV1"]) | changed)
                entry["time"] = now_rfc3339(self.clock())
            else:
                managed.append(self._managed_entry(manager, "Update", kind, changed, subresource))
        if managed:
            new["metadata"]["managedFields"] = managed
        else:
            new["metadata"].pop("managedFields", None)

    def create(self, kind: Kind, obj: dict, namespace: str = "", *, manager: str = "unknown",
               dry_run: bool = False, validate: bool = True, strict: bool = False, keep_status: bool = False) -> dict:
        obj = self._prepare_new(kind, obj, namespace)
        name = obj["metadata"].get("name", "")
        if validate:
            self._validate(kind, obj, strict)
        self._check_namespace(kind, namespace)
        if self.get(kind, namespace, name) is not None:
            raise ApiError(409, "AlreadyExists", f'{kind.resource} "{name}" already exists', kind=kind, name=name)
        if kind.has_status and not keep_status:
            obj.pop("status", None)
        md = obj["metadata"]
        for k in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp", "generation", "managedFields"):
            md.pop(k, None)
        md["uid"] = str(uuid.uuid4())  # unique per sandbox, like a real cluster (journals key on kube-system's)
        md["creationTimestamp"] = now_rfc3339(self.clock())
        if kind.kind in _GENERATION_KINDS:
            md["generation"] = 1
        if d := self.defaulters.get(kind.kind):
            d(obj, None)
        self._record_update(kind, None, obj, manager)
        if dry_run:
            md["resourceVersion"] = str(self.rv)
            return obj
        md["resourceVersion"] = self._next_rv()
        self._commit(kind, "ADDED", None, obj)
        return obj

    def _finish_update(self, kind: Kind, old: dict, new: dict, *, manager: str, subresource: str, dry_run: bool,
                       validate: bool, strict: bool, record: bool = True) -> dict:
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        md, omd = new.setdefault("metadata", {}), old["metadata"]
        if md.get("uid") and md["uid"] != omd["uid"]:  # another object than the one the writer read
            raise invalid(kind, omd.get("name", ""),
                          [f'metadata.uid: Invalid value: "{md["uid"]}": field is immutable'])
        for k in ("uid", "creationTimestamp", "name"):
            md[k] = omd[k]
        if kind.namespaced:
            md["namespace"] = omd["namespace"]
        if "deletionTimestamp" in omd:
            md["deletionTimestamp"] = omd["deletionTimestamp"]
        if subresource == "status":
            # the status subresource changes status only
            keep = {k: v for k, v in old.items() if k != "status"}
            new = {**keep, "status": new.get("status", old.get("status"))}
            md = new["metadata"] = dict(old["metadata"])
        elif kind.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        if subresource != "status":
            immutable_fields(kind, old, new)  # before defaulting, which would paper over a changed clusterIP
        if d := self.defaulters.get(kind.kind):  # before comparing specs: clients drop defaulted nulls
            d(new, old)
        if kind.kind in _GENERATION_KINDS:
            gen = omd.get("generation", 1)
            if subresource != "status" and _spec_of(old) != _spec_of(new):
                gen += 1
            md["generation"] = gen
        if validate:
            self._validate(kind, new, strict)
        if record:
            md["managedFields"] = omd.get("managedFields") or []
            self._record_update(kind, old, new, manager, subresource)
        if _same_content(old, new):
            return old  # a no-op write keeps the resourceVersion, as the apiserver does
        if dry_run:
            md["resourceVersion"] = omd["resourceVersion"]
            return new
        md["resourceVersion"] = self._next_rv()
        self._commit(kind, "MODIFIED", old, new)
        return new

    def update(self, kind: Kind, obj: dict, namespace: str, name: str, *, subresource: str = "",
               manager: str = "unknown", dry_run: bool = False, validate: bool = True, strict: bool = False) -> dict:
        old = self.must_get(kind, namespace, name)
        new = copy.deepcopy(obj)
        body_name = (new.get("metadata") or {}).get("name")
        if body_name and body_name != name:
            raise ApiError(400, "BadRequest", f"the name of the object ({body_name}) does not match the name on the URL ({name})")
        _check_resource_version(kind, old, (new.get("metadata") or {}).get("resourceVersion"))
        if kind.conditional_update and not (new.get("metadata") or {}).get("resourceVersion"):
            raise ApiError(422, "Invalid", f'{kind.resource} "{name}" is invalid: metadata.resourceVersion: Invalid '
                           "value: 0: must be specified for an update", kind=kind, name=name)
        want_uid, uid = (new.get("metadata") or {}).get("uid"), old["metadata"]["uid"]
        if want_uid and want_uid != uid:  # etcd3's storage precondition, as kube-apiserver words it
            res = kind.resource
            key = f"/registry/{res}/{namespace + '/' if namespace else ''}{name}"
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res} "{name}": StorageError: invalid '
                           f"object, Code: 4, Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: Precondition "
                           f"failed: UID in precondition: {want_uid}, UID in object meta: {uid}", kind=kind, name=name)
        return self._finish_update(kind, old, new, manager=manager, subresource=subresource, dry_run=dry_run,
                                   validate=validate, strict=strict)

    def patch(self, kind: Kind, namespace: str, name: str, body: bytes | str | dict | list, content_type: str, *,
              subresource: str = "", manager: str | None = None, force: bool = False, dry_run: bool = False,
              validate: bool = True, strict: bool = False) -> dict:
        ctype = content_type.split(";")[0].strip()
        if isinstance(body, (bytes, str)):
            try:
                data = yaml.safe_load(body) if ctype == "application/apply-patch+yaml" else json.loads(body or b"null")
            except (ValueError, yaml.YAMLError) as e:
                raise ApiError(400, "BadRequest", f"error decoding patch: {e}") from None
        else:
            data = body
        if ctype == "application/apply-patch+yaml":
            if not manager:
                raise ApiError(400, "BadRequest", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required "
                               "value: is required for apply patch")
            return self.apply(kind, namespace, name, data, manager=manager, force=force, dry_run=dry_run,
                              subresource=subresource, strict=strict)
        old = self.must_get(kind, namespace, name)
        info = self._ownership(kind)
        try:
            if ctype == "application/json-patch+json":
                if not isinstance(data, list):
                    raise P.PatchError("json patch body must be a list of operations")
                new = P.json_patch(old, data)
            elif ctype == "application/merge-patch+json":
                new = P.merge_patch(old, data)
            elif ctype == "application/strategic-merge-patch+json":
                if not isinstance(data, dict):
                    raise P.PatchError("strategic merge patch body must be an object")
                new = P.strategic_merge(old, data, info)
            else:
                raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                               "accepted media types include: application/json-patch+json, "
                               "application/merge-patch+json, application/apply-patch+yaml, "
                               "application/strategic-merge-patch+json")
        except P.PatchError as e:
            raise ApiError(422, "Invalid", str(e), kind=kind, name=name) from None
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "patch produced a non-object", kind=kind, name=name)
        new = copy.deepcopy(new)  # merges share unpatched parts with the stored object: never mutate it
        _check_resource_version(kind, old, (new.get("metadata") or {}).get("resourceVersion"))
        return self._finish_update(kind, old, new, manager=manager or "unknown", subresource=subresource,
                                   dry_run=dry_run, validate=validate, strict=strict)

    def apply(self, kind: Kind, namespace: str, name: str, config: dict, *, manager: str, force: bool = False,
              dry_run: bool = False, subresource: str = "", strict: bool = False) -> dict:
        """Server-side apply: create when missing, else merge and move field ownership to ``manager``."""
        if not isinstance(config, dict):
            raise ApiError(400, "BadRequest", "apply patch must be an object")
        cmd = config.get("metadata") or {}
        if cmd.get("name") and cmd["name"] != name:
            raise ApiError(400, "BadRequest", f"the name of the object ({cmd['name']}) does not match the name on "
                           f"the URL ({name})")
        if config.get("apiVersion") != kind.api_version or config.get("kind") != kind.kind:
            raise ApiError(400, "BadRequest", f"apply patch apiVersion/kind must be {kind.api_version}/{kind.kind}, "
                           f"got {config.get('apiVersion')}/{config.get('kind')}")
        info = self._ownership(kind)
        applied = self._content_paths(config, info) if subresource != "status" else P.field_set(
            {"status": config.get("status") or {}}, info)
        old = self.get(kind, namespace, name)
        if old is None and cmd.get("uid"):  # a uid names one object: there is none to match
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.resource} "{name}": uid mismatch: '
                           f"the provided object specified uid {cmd['uid']}, and no existing object was found",
                           kind=kind, name=name)
        if old is None:
            cfg = copy.deepcopy(config)
            cfg.setdefault("metadata", {})["name"] = name
            obj = self.create(kind, cfg, namespace, manager=manager, dry_run=True, strict=strict)
            obj["metadata"]["managedFields"] = [self._managed_entry(manager, "Apply", kind, applied)]
            if dry_run:
                return obj
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._commit(kind, "ADDED", None, obj)
            return obj
        _check_resource_version(kind, old, cmd.get("resourceVersion"))  # an apply may carry one as a precondition
        managed = [dict(e) for e in old["metadata"].get("managedFields") or []]
        conflicts = []
        # only values can conflict: a map or list item that holds applied fields is compared through them
        # (a live container has defaulted fields the config lacks; that is no conflict)
        parents = {q[:i] for q in applied for i in range(1, len(q))}
        for e in managed:
            if e["manager"] == manager and e["operation"] == "Apply":
                continue
            owned = P.parse_fields_v1(e.get("fieldsV1", {}))
            clash = {p for p in owned & applied if p not in parents and _value_at(old, p) != _value_at(config, p)}
            if clash and not force:
                conflicts += [(e["manager"], p) for p in clash]
            elif clash:
                e["fieldsV1"] = P.fields_v1(owned - clash)
        if conflicts:
            causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}"',
                       "field": _path_text(p)} for m, p in conflicts[:10]]
            msg = f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) > 1 else ''}: " + "; ".join(
                f'conflict with "{m}": {_path_text(p)}' for m, p in conflicts[:10])
            raise ApiError(409, "Conflict", msg, kind=kind, name=name, causes=causes)
        mine = next((e for e in managed if e["manager"] == manager and e["operation"] == "Apply"), None)
        previously = P.parse_fields_v1(mine["fieldsV1"]) if mine else set()
        # a deep copy: apply_merge shares untouched parts with the stored object, and they are edited below
        new = copy.deepcopy(P.apply_merge(old, {k: v for k, v in config.items() if k not in ("apiVersion", "kind")},
                                          info))
        others = set()
        for e in managed:
            if e is not mine:
                others |= P.parse_fields_v1(e.get("fieldsV1", {}))
        for p in sorted(previously - applied, key=len, reverse=True):
            if p not in others and not any(o[: len(p)] == p for o in others):
                P.remove_path(new, p)
        entry = self._managed_entry(manager, "Apply", kind, applied, subresource)
        if mine is not None:  # the manager's entry keeps its place: a repeated apply is a no-op
            managed[managed.index(mine)] = entry
        else:
            managed.append(entry)
        managed = [e for e in managed if e.get("fieldsV1")]
        new["metadata"] = dict(new["metadata"])
        new["metadata"]["managedFields"] = managed
        return self._finish_update(kind, old, new, manager=manager, subresource=subresource, dry_run=dry_run,
                                   validate=True, strict=strict, record=False)

    def bind(self, namespace: str, name: str, node: str, uid: str) -> None:
        """``pods/NAME/binding``, the scheduler's one way to set ``spec.nodeName``: only the pod named by uid,
        and only while it is unbound."""
        kind = next(k for k in self.kinds if k.kind == "Pod")
        pod = self.must_get(kind, namespace, name)
        if pod["metadata"]["uid"] != uid:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                           f"{pod['metadata']['uid']}", kind=kind, name=name)
        if pod["spec"].get("nodeName"):
            raise ApiError(409, "Conflict", f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
                           kind=kind, name=name)
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        self.update(kind, new, namespace, name, manager="default-scheduler", validate=False)

    def delete(self, kind: Kind, namespace: str, name: str, *, dry_run: bool = False,
               preconditions: dict | None = None) -> dict:
        old = self.must_get(kind, namespace, name)
        if preconditions:
            if preconditions.get("uid") and preconditions["uid"] != old["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                               f"UID in object meta: {old['metadata']['uid']}", kind=kind, name=name)
            if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != old["metadata"][
                    "resourceVersion"]:
                raise ApiError(409, "Conflict", "Precondition failed: resourceVersion", kind=kind, name=name)
        if dry_run:
            return old
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._commit(kind, "DELETED", old, gone)
        self._collect_garbage(old["metadata"]["uid"], namespace)
        if kind.kind == "Namespace":
            for k, st in self.kinds.items():
                if k.namespaced:
                    for (ns, n) in [key for key in st.objects if key[0] == name]:
                        self.delete(k, ns, n)
        return gone

    def _collect_garbage(self, uid: str, namespace: str) -> None:
        """Delete dependents whose ownerReferences name the deleted object (background cascade)."""
        for k, st in self.kinds.items():
            for key, obj in list(st.objects.items()):
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs) and key in st.objects:
                    self.delete(k, key[0], key[1])

    # ---------------------------------------------------------------- watch
    def watch(self, kind: Kind, namespace: str | None, resource_version: str | None,
              label_selector: str | None = None, field_selector: str | None = None,
              send_initial: bool = True) -> Watcher:
        """Open a watch. Raises ApiError(410) when the resourceVersion has been compacted away."""
        st = self.kinds[kind]
        w = Watcher(kind, namespace or None, parse_label_selector(label_selector),
                    parse_field_selector(field_selector))
        if resource_version not in (None, "", "0"):
            try:
                rv = int(resource_version)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resource version: {resource_version!r}") from None
            if rv < st.compacted_rv:
                raise ApiError(410, "Expired", f"too old resource version: {rv} ({st.compacted_rv})")
            for hrv, etype, old, new in st.history:
                if hrv > rv:
                    w.offer(etype, old, new)
        elif send_initial:
            for obj in self.list(kind, namespace, label_selector, field_selector):
                w.queue.put_nowait(("ADDED", obj))
        st.watchers.append(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        w.closed = True
        st = self.kinds[w.kind]
        if w in st.watchers:
            st.watchers.remove(w)


_NS = next(k for k in KINDS if k.kind == "Namespace")
_GENERATION_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Ingress", "Service", "Pod"}


def _spec_of(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _same_content(a: dict, b: dict) -> bool:
    """A no-op write: equal but for resourceVersion and managedFields timestamps (a new co-owner is a change)."""
    def meta(o: dict) -> dict:
        md = {k: v for k, v in o.get("metadata", {}).items() if k != "resourceVersion"}
        if "managedFields" in md:
            md["managedFields"] = [{k: v for k, v in e.items() if k != "time"} for e in md["managedFields"]]
        return md
    ma, mb = meta(a), meta(b)
    if ma != mb:
        return False
    return {k: v for k, v in a.items() if k != "metadata"} == {k: v for k, v in b.items() if k != "metadata"}


def _value_at(obj, path):
    try:
        return P.get_path(obj, path)
    except KeyError:
        return _ABSENT


_ABSENT = object()


def _path_text(path: tuple) -> str:
    out = ""
    for seg in path:
        out += f"[{seg[1]}]" if isinstance(seg, tuple) else f".{seg}"
    return out


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def random_suffix(rng: random.Random, n: int = 5) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=n))
