"""Defaulting the apiserver does on write, for the kinds whose defaults clients rely on."""

from __future__ import annotations

import base64
import ipaddress

from .store import ApiError, Store, b64

SERVICE_CIDR = ipaddress.ip_network("10.43.0.0/16")  # K3s's default service CIDR
RESERVED_IPS = {"10.43.0.1", "10.43.0.10"}  # kubernetes and kube-dns


def install(store: Store) -> None:
    allocator = ClusterIPs(store)
    store.defaulters.update({
        "Secret": secret,
        "Service": allocator.default,
        "Pod": pod,
        "Deployment": deployment,
        "StatefulSet": statefulset,
        "DaemonSet": daemonset,
        "Namespace": namespace,
        "ConfigMap": lambda obj, old: None,
    })


def secret(obj: dict, old: dict | None) -> None:
    string_data = obj.pop("stringData", None)
    if string_data:
        data = dict(obj.get("data") or {})
        for k, v in string_data.items():
            data[k] = b64(v)
        obj["data"] = data
    obj.setdefault("type", "Opaque")
    for k, v in (obj.get("data") or {}).items():
        try:
            base64.b64decode(v, validate=True)
        except (ValueError, TypeError):
            raise ApiError(400, "BadRequest", f"illegal base64 data in data[{k!r}]") from None


class ClusterIPs:
    def __init__(self, store: Store):
        self.store = store
        self.next = 11

    def _used(self) -> set[str]:
        from .kinds import BY_KIND
        svc = BY_KIND[("v1", "Service")]
        return {o["spec"].get("clusterIP") for o in self.store.kinds[svc].objects.values()} | RESERVED_IPS

    def allocate(self) -> str:
        used = self._used()
        while True:
            ip = str(SERVICE_CIDR.network_address + self.next)
            self.next += 1
            if ip not in used:
                return ip

    def default(self, obj: dict, old: dict | None) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        if old is not None:
            for k in ("clusterIP", "clusterIPs"):
                if k in old.get("spec", {}):
                    spec[k] = old["spec"][k]
        if spec.get("clusterIP") in (None, "") and spec["type"] != "ExternalName":
            spec["clusterIP"] = self.allocate()
        if spec.get("clusterIP") and spec["clusterIP"] != "None":
            spec["clusterIPs"] = [spec["clusterIP"]]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
        if spec["type"] == "LoadBalancer":
            spec.setdefault("externalTrafficPolicy", "Cluster")
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        obj.setdefault("status", {"loadBalancer": {}}) if old is None else None


def _pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        image = c.get("image") or ""
        tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
        latest = image.endswith(":latest") or not tagged
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for port in c.get("ports") or []:
            port.setdefault("protocol", "TCP")


def pod(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    _pod_spec(spec)
    if old is None:
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("priority", 0)
        obj["status"] = obj.get("status") or {"phase": "Pending", "qosClass": _qos(spec)}


def _qos(spec: dict) -> str:
    cs = spec.get("containers") or []
    if any((c.get("resources") or {}).get("requests") or (c.get("resources") or {}).get("limits") for c in cs):
        return "Burstable"
    return "BestEffort"


def _template(obj: dict) -> None:
    tmpl = obj.setdefault("spec", {}).setdefault("template", {})
    tmpl.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    _pod_spec(tmpl.setdefault("spec", {}))


def deployment(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    _template(obj)


def statefulset(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    _template(obj)


def daemonset(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    _template(obj)


def namespace(obj: dict, old: dict | None) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj["status"] = {"phase": "Active"}
    labels = obj["metadata"].setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
