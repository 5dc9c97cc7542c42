"""Server-side printing (meta.k8s.io Table) and the OpenAPI v3 bits kubectl looks for."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from .kinds import GROUPS, Kind


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:  # clients may write times with fractions or +00:00 (the Python client does)
        t = datetime.fromisoformat(ts)
    except ValueError:
        return "<unknown>"
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return human_duration(max(int(time.time() - t.timestamp()), 0))


def human_duration(secs: int) -> str:
    """apimachinery's duration.HumanDuration, which kubectl's AGE columns print."""
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        return f"{minutes}m{secs % 60}s" if secs % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _node_row(o: dict) -> list:
    conds = {c["type"]: c["status"] for c in o.get("status", {}).get("conditions", [])}
    ready = {"True": "Ready", "False": "NotReady"}.get(conds.get("Ready"), "NotReady")
    if o.get("spec", {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    labels = o["metadata"].get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    return [ready, ",".join(roles) or "<none>", _age(o["metadata"].get("creationTimestamp")),
            o.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")]


def _pod_row(o: dict) -> list:
    st = o.get("status", {})
    cs = st.get("containerStatuses") or []
    ready = sum(1 for c in cs if c.get("ready"))
    reason = st.get("reason") or st.get("phase", "Pending")
    for c in cs:
        w = (c.get("state") or {}).get("waiting")
        t = (c.get("state") or {}).get("terminated")
        if w and w.get("reason"):
            reason = w["reason"]
        elif t and t.get("reason") and reason not in ("Succeeded",):
            reason = t["reason"]
    restarts = sum(c.get("restartCount", 0) for c in cs)
    return [f"{ready}/{len(o['spec'].get('containers', []))}", reason, restarts,
            _age(o["metadata"].get("creationTimestamp")), st.get("podIP") or "<none>",
            o["spec"].get("nodeName") or "<none>"]


def _deploy_row(o: dict) -> list:
    st, spec = o.get("status", {}), o.get("spec", {})
    return [f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}", st.get("updatedReplicas", 0),
            st.get("availableReplicas", 0), _age(o["metadata"].get("creationTimestamp"))]


def _sts_row(o: dict) -> list:
    st, spec = o.get("status", {}), o.get("spec", {})
    return [f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}", _age(o["metadata"].get("creationTimestamp"))]


def _svc_row(o: dict) -> list:
    spec = o.get("spec", {})
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
    ing = (o.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
    ext = ",".join(i.get("ip", "") for i in ing) or ("<pending>" if spec.get("type") == "LoadBalancer" else "<none>")
    return [spec.get("type", "ClusterIP"), spec.get("clusterIP", ""), ext, ports or "<none>",
            _age(o["metadata"].get("creationTimestamp"))]


def _ing_row(o: dict) -> list:
    hosts = ",".join(r.get("host", "*") for r in o.get("spec", {}).get("rules") or [])
    ports = "80, 443" if o.get("spec", {}).get("tls") else "80"
    return [o.get("spec", {}).get("ingressClassName") or "<none>", hosts, "", ports,
            _age(o["metadata"].get("creationTimestamp"))]


def _event_row(o: dict) -> list:
    """As the apiserver prints events (always wide; kubectl hides priority-1 columns): ages, not timestamps."""
    io, src = o.get("involvedObject", {}), o.get("source") or {}
    first = _age(o.get("firstTimestamp") or o.get("eventTime"))
    last = _age(o["lastTimestamp"]) if o.get("lastTimestamp") else first
    kind = io.get("kind", "").lower()
    target = f"{kind}/{io['name']}" if io.get("name") else kind
    source = src.get("component") or o.get("reportingComponent") or ""
    if src.get("host"):
        source += f", {src['host']}"
    return [last, o.get("type", ""), o.get("reason", ""), target, io.get("fieldPath", ""), source,
            (o.get("message") or "").strip(), first, o.get("count", 1), o["metadata"]["name"]]


def _namespace_row(o: dict) -> list:
    return [o.get("status", {}).get("phase", "Active"), _age(o["metadata"].get("creationTimestamp"))]


def _configmap_row(o: dict) -> list:
    return [len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o["metadata"].get("creationTimestamp"))]


def _secret_row(o: dict) -> list:
    return [o.get("type", "Opaque"), len(o.get("data") or {}), _age(o["metadata"].get("creationTimestamp"))]


COLUMNS = {
    "Node": (["Status", "Roles", "Age", "Version"], _node_row),
    "Pod": (["Ready", "Status", "Restarts", "Age", "IP", "Node"], _pod_row),
    "Deployment": (["Ready", "Up-to-date", "Available", "Age"], _deploy_row),
    "StatefulSet": (["Ready", "Age"], _sts_row),
    "Service": (["Type", "Cluster-IP", "External-IP", "Port(s)", "Age"], _svc_row),
    "Ingress": (["Class", "Hosts", "Address", "Ports", "Age"], _ing_row),
    # Events carry their name last (and hidden), as the apiserver prints them
    "Event": (["Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message", "First Seen", "Count",
               "Name"], _event_row),
    "Namespace": (["Status", "Age"], _namespace_row),
    "ConfigMap": (["Data", "Age"], _configmap_row),
    "Secret": (["Type", "Data", "Age"], _secret_row),
}
PRIORITY_1 = {"IP", "Node"}
EVENT_PRIORITY_1 = {"Subobject", "Source", "First Seen", "Count", "Name"}


def table(kind: Kind, items: list[dict], rv: str, include_object: str | None = None) -> dict:
    names, row_fn = COLUMNS.get(kind.kind, (["Age"], lambda o: [_age(o["metadata"].get("creationTimestamp"))]))
    wide = EVENT_PRIORITY_1 if kind.kind == "Event" else PRIORITY_1
    named = "Name" in names  # the row function gives the name cell itself
    cols = [] if named else [{"name": "Name", "type": "string", "format": "name", "description": "Name",
                              "priority": 0}]
    cols += [{"name": n, "type": "integer" if n in ("Count", "Data") else "string",
              "format": "name" if n == "Name" else "", "description": n, "priority": 1 if n in wide else 0}
             for n in names]
    rows = []
    for o in items:
        if include_object == "Object":
            embedded = o
        else:
            embedded = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}
        rows.append({"cells": ([] if named else [o["metadata"]["name"]]) + row_fn(o), "object": embedded})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": cols, "rows": rows}


def openapi_v3(gv_path: str) -> dict:
    """Enough of /openapi/v3/<gv> for kubectl's query-parameter checks (fieldValidation, dryRun)."""
    parts = gv_path.split("/")
    if parts[0] == "api":
        group, version = "", parts[1]
    else:
        group, version = parts[1], parts[2]
    params = [{"name": n, "in": "query", "schema": {"type": "string"}}
              for n in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")]
    paths = {}
    for k in GROUPS.get(group, []):
        if k.version != version:
            continue
        prefix = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        item = f"{prefix}/namespaces/{{namespace}}/{k.plural}/{{name}}" if k.namespaced else f"{prefix}/{k.plural}/{{name}}"
        gvk = {"group": group, "version": version, "kind": k.kind}
        op = {"parameters": params, "x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "patch",
              "responses": {"200": {"description": "OK"}}}
        paths[item] = {"patch": op, "put": {**op, "x-kubernetes-action": "put"}}
        coll = item.rsplit("/", 1)[0]
        paths[coll] = {"post": {**op, "x-kubernetes-action": "post"}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.5+k3s1"}, "paths": paths,
            "components": {"schemas": {}}}
