"""The Kubernetes resource kinds the sandbox serves, with what discovery says about them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # kube-apiserver refuses an update (PUT) that names no resourceVersion for this kind, with 422
    # "metadata.resourceVersion: Invalid value: 0: must be specified for an update" (its strategy's
    # AllowUnconditionalUpdate is false); every other kind here takes the newest copy
    conditional_update: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def resource(self) -> str:
        """How kube-apiserver names the resource in its messages: ``configmaps``, ``deployments.apps``."""
        return self.plural if not self.group else f"{self.plural}.{self.group}"

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "Namespace", "namespaces", False, ("ns",), ("status",)),
    Kind("", "v1", "Node", "nodes", False, ("no",), ("status",)),
    Kind("", "v1", "Pod", "pods", True, ("po",), ("status", "log"), ("all",)),
    Kind("", "v1", "Service", "services", True, ("svc",), ("status",), ("all",)),
    Kind("", "v1", "Secret", "secrets", True),
    Kind("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    Kind("", "v1", "Event", "events", True, ("ev",)),
    Kind("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",)),
    Kind("coordination.k8s.io", "v1", "Lease", "leases", True, conditional_update=True),
    Kind("apps", "v1", "Deployment", "deployments", True, ("deploy",), ("status", "scale"), ("all",)),
    Kind("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",), ("status", "scale"), ("all",)),
    Kind("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), ("status",), ("all",)),
    # batch/v1 is served (stored, validated, patched) but runs nothing: no Job controller makes pods
    Kind("batch", "v1", "Job", "jobs", True, (), ("status",), ("all",)),
    Kind("batch", "v1", "CronJob", "cronjobs", True, ("cj",), ("status",), ("all",)),
    Kind("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), ("status",)),
    Kind("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    Kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
)

BY_PATH: dict[tuple[str, str, str], Kind] = {(k.group, k.version, k.plural): k for k in KINDS}
BY_KIND: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in KINDS}
GROUPS: dict[str, list[Kind]] = {}
for _k in KINDS:
    GROUPS.setdefault(_k.group, []).append(_k)


def kind_of(api_version: str, kind: str) -> Kind | None:
    return BY_KIND.get((api_version, kind))
