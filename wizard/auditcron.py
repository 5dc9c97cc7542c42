"""The audit inside the cluster: ``ghcr2gitea export --audit-cronjob`` and ``audit --result-configmap``.

The export writes one multi-document ``audit-cronjob.yaml`` (applied in its order by ``kubectl apply -f``):

- a ServiceAccount and a CronJob whose Job runs ``ghcr2gitea audit --format json --result-configmap NS/NAME``
  with the plan from a ConfigMap (no node probes: the in-cluster audit creates no pod, runs nothing privileged);
- a read-only ClusterRole holding exactly what the audit reads (``AUDIT_READS``: the verbs it sends, by name
  where it reads by name; no ``watch``, no pods, no exec), and its ClusterRoleBinding;
- a Role per namespace the audit reads Secrets in: ``get`` of those Secrets by name only (the registry
  secrets' hosts and users, the proxy certificate's expiry are checked; no Secret is listed);
- the result ConfigMap, created empty by the export, and a Role allowing only ``get`` and ``update`` of it by
  name: RBAC cannot limit ``create`` to a name (the name is not known when a create is authorised), so the
  audit never creates it, and a ``resourceNames`` rule with ``create`` would be a rule that cannot work.

Every object carries the wizard's managed-by label; the audit's one write (``ResultWriter``) refuses a
ConfigMap without it. The Job's exit status is the audit's exit code (0 pass, 1 findings, 2 could not check).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .cluster import MANAGED_BY, STAGE_LABEL, ApiError, ClusterReader, kind_of
from .ownership import owned
from .plan import DNS_LABEL, Plan

DEFAULT_NAMESPACE = "ghcr2gitea-audit"
DEFAULT_SCHEDULE = "17 * * * *"  # hourly, off the top of the hour
NAME = "ghcr2gitea-audit"  # the ServiceAccount, ClusterRole, bindings and CronJob
RESULT = "ghcr2gitea-audit-result"  # the ConfigMap the audit writes
PLAN_CM = "ghcr2gitea-audit-plan"  # the plan (and its CA files) the audit reads, mounted at MOUNT
MOUNT = "/etc/ghcr2gitea"
FILE = "audit-cronjob.yaml"
STAGE = "audit"
FIELD_MANAGER = "ghcr2gitea-audit"
_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?\Z", re.ASCII)


# ------------------------------------------------------------------ what the audit reads
def gitea_service_ref(p: Plan) -> tuple[str, str]:
    """(namespace, name) of gitea.internal_service (name.namespace.svc…:port)."""
    host = p.internal_service.split(":", 1)[0].split(".")
    return (host[1] if len(host) > 1 else "default"), host[0]


def cluster_reads(p: Plan) -> list[dict]:
    """The ClusterRole's rules: each (resource, verb) ``ghcr2gitea audit`` sends, the names where it reads by
    name. Checked against a real kube-apiserver by tests/real/test_audit_cronjob_real.py: every rule needed."""
    def rule(group: str, resource: str, verbs: list[str], names: set[str] | None = None) -> dict:
        r = {"apiGroups": [group], "resources": [resource]}
        if names:
            r["resourceNames"] = sorted(names)
        r["verbs"] = verbs
        return r
    return [
        rule("", "nodes", ["list"]),  # Preflight: the nodes and their roles
        rule("", "events", ["list"]),  # Verify: image pull failures (reason=Failed), cluster-wide
        rule("", "services", ["get"], {"kube-dns", "traefik", gitea_service_ref(p)[1], p.gitea_service,
                                       p.proxy_name}),
        rule("", "configmaps", ["get"], {p.proxy_config_configmap, p.proxy_ca_configmap}),
        rule("apps", "deployments", ["get"], {p.proxy_name}),
        rule("apps", "deployments", ["list"]),  # the workloads' images (plan's workloads namespace)
        rule("apps", "statefulsets", ["list"]),
        rule("apps", "daemonsets", ["list"]),
        rule("batch", "cronjobs", ["list"]),  # CronJobs running plan images (patched by Workloads)
        rule("batch", "jobs", ["list"]),  # running Jobs (cannot be patched: reported)
        rule("networking.k8s.io", "ingresses", ["list"]),
        rule("rbac.authorization.k8s.io", "roles", ["get"], {p.runner_role}),
        rule("rbac.authorization.k8s.io", "rolebindings", ["get"], {p.runner_role}),
    ]


def pod_reads(p: Plan) -> dict:
    """The one namespaced read of pods: listed in the workloads namespace only (bare Pods running plan images,
    which cannot be patched and are reported), never cluster-wide, never exec or logs."""
    return {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}


def secret_reads(p: Plan) -> dict[str, list[str]]:
    """namespace -> the Secrets the audit gets there (by name; it never lists Secrets)."""
    out: dict[str, set[str]] = {}
    out.setdefault(p.secrets_namespace, set()).update((p.push_secret, p.pull_secret))
    out.setdefault(p.proxy_namespace, set()).add(p.proxy_tls_secret)
    return {ns: sorted(names) for ns, names in sorted(out.items())}


# ------------------------------------------------------------------ validation (bad input: one line, the fix)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, low, high, names): minute hour day-of-month month day-of-week, as Kubernetes's CronJob parser takes them
_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def check_schedule(text: str) -> str:
    """A CronJob schedule: five fields (minute hour day-of-month month day-of-week) or a macro such as @daily;
    raises ValueError naming what is wrong."""
    s = " ".join(text.split())
    if s in MACROS:
        return s
    fields = s.split(" ")
    if len(fields) != 5 or not s:
        raise ValueError(f"{text!r}: expected 5 fields (minute hour day-of-month month day-of-week, e.g. "
                         f"'17 * * * *') or one of {', '.join(MACROS)}")
    for value, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        for item in value.split(","):
            _check_item(text, item, name, low, high, names)
    return s


def _check_item(text: str, item: str, name: str, low: int, high: int, names: tuple[str, ...]) -> None:
    def number(v: str) -> int:
        if v.lower() in names:
            return names.index(v.lower()) + (1 if name == "month" else 0)
        if not v.isascii() or not v.isdigit():
            raise ValueError(f"{text!r}: {name} {v!r} is not a number {low}-{high}"
                             + (f" or a name ({names[0]}…{names[-1]})" if names else ""))
        n = int(v)
        if not low <= n <= high:
            raise ValueError(f"{text!r}: {name} {n} is out of range {low}-{high}")
        return n
    base, sep, step = item.partition("/")
    if sep and (not step.isascii() or not step.isdigit() or int(step) == 0):
        raise ValueError(f"{text!r}: {name} step {step!r} must be a whole number of at least 1")
    if base in ("*", "?"):
        return
    lo, dash, hi = base.partition("-")
    first = number(lo)
    if dash and number(hi) < first:
        raise ValueError(f"{text!r}: {name} range {base!r} runs backwards")


def check_timezone(text: str) -> str:
    """The CronJob's ``spec.timeZone``: an IANA time zone name (``Europe/Berlin``, ``UTC``) known to the tz
    database; raises ValueError naming what to pass instead."""
    import zoneinfo
    if text in zoneinfo.available_timezones():
        return text
    near = sorted(z for z in zoneinfo.available_timezones() if z.lower() == text.strip().lower())
    raise ValueError(f"{text!r} is not an IANA time zone name"
                     + (f" (did you mean {near[0]!r}?)" if near else " such as 'Europe/Berlin' or 'UTC'"))


def check_image(text: str) -> str:
    from .images.reference import ReferenceError, parse
    try:
        parse(text)
    except ReferenceError as e:
        raise ValueError(str(e)) from None
    if text != text.strip() or any(c.isspace() for c in text):
        raise ValueError(f"image reference {text!r}: no spaces")
    return text


def check_namespace(text: str) -> str:
    if not DNS_LABEL.match(text):
        raise ValueError(f"{text!r} is not a valid namespace name (a DNS-1123 label: lowercase letters, digits "
                         "and '-', at most 63)")
    return text


def parse_configmap_ref(text: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` of a ConfigMap; raises ValueError naming the fault."""
    ns, sep, name = text.partition("/")
    if not sep or not ns or not name:
        raise ValueError(f"{text!r}: expected NAMESPACE/NAME, e.g. {DEFAULT_NAMESPACE}/{RESULT}")
    check_namespace(ns)
    if not _SUBDOMAIN.match(name):
        raise ValueError(f"{text!r}: {name!r} is not a valid ConfigMap name (a DNS-1123 subdomain)")
    return ns, name


# ------------------------------------------------------------------ the objects
def _meta(name: str, namespace: str | None = None) -> dict:
    md = {"name": name}
    if namespace:
        md["namespace"] = namespace
    md["labels"] = {**MANAGED_BY, STAGE_LABEL: STAGE}
    return md


def plan_for_pod(p: Plan) -> dict[str, str]:
    """The plan ConfigMap's files: the plan as the operator wrote it, its CA files beside it (relative names, read
    from the container's working directory ``MOUNT``), without what lives on the operator's machine only
    (manifest files, the CI checkout): the in-cluster audit checks the cluster, the local one the files."""
    raw = yaml.safe_load(Path(p.source_path).read_text()) or {}
    files: dict[str, str] = {}
    for section, key, filename in (("registry", "ca_file", "registry-ca.crt"), ("ghcr", "ca_file", "ghcr-ca.crt")):
        path = (raw.get(section) or {}).get(key)
        if path:
            files[filename] = Path(path).read_text()
            raw[section][key] = filename
    (raw.get("workloads") or {}).pop("manifests", None)
    (raw.get("ci") or {}).pop("repo_dir", None)
    head = ("# the plan the in-cluster audit reads (ghcr2gitea export --audit-cronjob); the operator's copy is the "
            "original\n")
    return {"plan.yaml": head + yaml.safe_dump(raw, sort_keys=False, default_flow_style=False), **files}


def build(p: Plan, *, namespace: str, schedule: str, image: str, timezone: str | None = None) -> list[dict]:
    """The objects, in the order they must be applied."""
    sa = {"kind": "ServiceAccount", "name": NAME, "namespace": namespace}
    objs: list[dict] = []
    if namespace == DEFAULT_NAMESPACE:  # the export's own namespace; another one is the operator's and must exist
        objs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(namespace)})
    objs += [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, namespace),
         "automountServiceAccountToken": True},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(NAME),
         "rules": cluster_reads(p)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": _meta(NAME),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [sa]},
    ]
    for ns, names in secret_reads(p).items():
        objs += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(f"{NAME}-secrets", ns),
             "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": names, "verbs": ["get"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": _meta(f"{NAME}-secrets", ns),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{NAME}-secrets"},
             "subjects": [sa]},
        ]
    objs += [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": _meta(f"{NAME}-pods", p.workloads_namespace), "rules": [pod_reads(p)]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _meta(f"{NAME}-pods", p.workloads_namespace),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{NAME}-pods"},
         "subjects": [sa]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(f"{NAME}-result", namespace),
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [RESULT],
                    "verbs": ["get", "update"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _meta(f"{NAME}-result", namespace),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{NAME}-result"},
         "subjects": [sa]},
        # no data: an apply (or a GitOps sync) of this file never wipes the last result
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(RESULT, namespace)},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(PLAN_CM, namespace), "data": plan_for_pod(p)},
        cronjob(namespace, schedule, image, timezone),
    ]
    return objs


def command(namespace: str) -> list[str]:
    """The container's command (run in ``MOUNT``): the audit as JSON, written to the result ConfigMap."""
    return ["ghcr2gitea", "audit", "--plan", "plan.yaml", "--format", "json",
            "--result-configmap", f"{namespace}/{RESULT}"]


def cronjob(namespace: str, schedule: str, image: str, timezone: str | None = None) -> dict:
    """The CronJob; ``timezone`` (an IANA name, checked by check_timezone) is the zone its schedule is read in
    (``spec.timeZone``); without it, the kube-controller-manager's own zone."""
    labels = {**MANAGED_BY, STAGE_LABEL: STAGE}
    container = {
        "name": "audit", "image": image, "command": command(namespace), "workingDir": MOUNT,
        "env": [{"name": "HOME", "value": "/tmp"}],
        "securityContext": {"allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "plan", "mountPath": MOUNT, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {"serviceAccountName": NAME, "automountServiceAccountToken": True, "restartPolicy": "Never",
           "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                               "seccompProfile": {"type": "RuntimeDefault"}},
           "containers": [container],
           "volumes": [{"name": "plan", "configMap": {"name": PLAN_CM}}, {"name": "tmp", "emptyDir": {}}]}
    spec: dict = {"schedule": schedule}
    if timezone:
        spec["timeZone"] = timezone
    spec.update({"concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                 # one try per schedule: exit 1 (findings) is the answer, not a failure to retry
                 "jobTemplate": {"metadata": {"labels": labels},
                                 "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 900,
                                          "template": {"metadata": {"labels": labels}, "spec": pod}}}})
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta(NAME, namespace), "spec": spec}


def render(objs: list[dict]) -> str:
    head = ("# ghcr2gitea audit CronJob: the audit, read-only, on a schedule, its JSON in ConfigMap "
            f"{RESULT}.\n# Apply in this order: kubectl apply --server-side -f {FILE}\n")
    return head + yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False)


# ------------------------------------------------------------------ the audit's one write
class ResultNotWritten(Exception):
    """The result ConfigMap could not be written; the message names it and the fix."""


@dataclass
class Result:
    report: str  # the audit's JSON
    exit_code: int


class ResultWriter(ClusterReader):
    """A read-only connection that may send one write: an update of the named result ConfigMap (the wizard's,
    by its label). Everything else is refused by the transport, as for any audit."""

    def __init__(self, api, namespace: str, name: str, **kw):
        super().__init__(api, **kw)
        self.namespace, self.name = namespace, name
        self._path = kind_of("ConfigMap").path(namespace, name)

    def _may_write(self, method: str, path: str) -> bool:
        return method == "PUT" and path == self._path

    def write(self, result: Result) -> None:
        where = f"--result-configmap {self.namespace}/{self.name}"
        for _ in range(3):
            try:
                cm = self.get("ConfigMap", self.name, self.namespace)
                if cm is None:
                    raise ResultNotWritten(f"{where}: no such ConfigMap; apply {FILE} from `ghcr2gitea export "
                                           "--audit-cronjob` first (it creates the ConfigMap, empty)")
                if not owned(cm):
                    raise ResultNotWritten(f"{where}: not labelled app.kubernetes.io/managed-by=ghcr2gitea; the "
                                           "audit writes only its own ConfigMap: name another one")
                cm["data"] = {"audit.json": result.report, "exit-code": str(result.exit_code),
                              "finished-at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
                self.request("PUT", self._path, body=cm, content_type="application/json",
                             query={"fieldManager": FIELD_MANAGER})
                return
            except ApiError as e:
                if e.status == 409:  # changed between our read and write: read it again
                    continue
                raise ResultNotWritten(f"{where}: {e.forbidden or e}") from None
        raise ResultNotWritten(f"{where}: kept changing while the audit wrote it; it runs again on schedule")
