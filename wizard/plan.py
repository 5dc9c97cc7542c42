"""The migration plan: the operator's inputs, validated before anything touches the cluster.

One source of truth for every host name and object name the stages use. Secrets are never
in the plan (the token comes from GITEA_TOKEN, --token-file or a prompt). Every validation
error names the field, the bad value and the fix, on one line.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

import yaml

HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                      r"[A-Za-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
GITEA_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,38}[A-Za-z0-9_])?$")
CLUSTER_DNS_SUFFIXES = (".svc.cluster.local", ".svc", ".cluster.local")


class PlanError(Exception):
    """One or more problems with the plan; each line names the field, the value and the fix."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _problem(path: str, value, fix: str) -> str:
    shown = value if isinstance(value, (int, float)) else repr(value)
    return f"plan: {path}: {shown}: {fix}"


def is_cluster_dns(host: str) -> bool:
    h = host.split(":")[0].rstrip(".").lower()
    return h.endswith(CLUSTER_DNS_SUFFIXES)


def split_host_port(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = hostport.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return hostport, None


def check_host(path: str, value, problems: list[str], *, for_containerd: bool = False, port_ok: bool = True) -> None:
    """A registry host as containerd and image references write it: name[:port]."""
    if not isinstance(value, str) or not value:
        problems.append(_problem(path, value, "expected a host name like registry.example.com"))
        return
    if "://" in value or "/" in value:
        problems.append(_problem(path, value, "write the host only (no scheme or path), e.g. registry.example.com"))
        return
    host, port = split_host_port(value)
    if port is not None and (not port_ok or not 0 < port < 65536):
        problems.append(_problem(path, value, "the port must be between 1 and 65535"))
        return
    try:
        ipaddress.ip_address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if not is_ip and not HOSTNAME.match(host):
        problems.append(_problem(path, value, "not a valid host name (letters, digits, '-' and '.' only)"))
        return
    if for_containerd and is_cluster_dns(host):
        problems.append(_problem(path, value, "containerd runs on the node, not in the cluster, and cannot resolve "
                                 "cluster DNS names: use the external registry host name or an IP"))


@dataclass(frozen=True)
class Image:
    source: str
    target: str
    # How the CI workflow (guide Step 7) builds it; all optional. dockerfile is relative to context,
    # context is the repository folder Kaniko builds from, paths are shell patterns of the files whose
    # change rebuilds the image (default: the context folder, or everything when context is the root).
    dockerfile: str = "Dockerfile"
    context: str = "."
    paths: tuple[str, ...] = ()

    @property
    def source_repo(self) -> str:
        return self.source.split("/", 1)[1]

    @property
    def target_repo(self) -> str:
        """org/name on the Gitea registry."""
        return self.target.split("/", 1)[1]

    @property
    def name(self) -> str:
        return self.target.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Plan:
    # gitea
    internal_service: str = "gitea-http.gitea-system.svc.cluster.local:3000"
    root_url: str = ""
    username: str = "registry-user"
    org: str = ""
    # registry
    registry_host: str = ""
    legacy_hosts: tuple[str, ...] = ()
    registry_ca_file: str | None = None
    node_tls: str = "skip_verify"  # how nodes trust the registry and realm: skip_verify | ca
    images: tuple[Image, ...] = ()
    # object names (the guide's by default)
    secrets_namespace: str = "default"
    push_secret: str = "gitea-registry-push"
    pull_secret: str = "gitea-registry-secret"
    old_pull_secret: str = "ghcr-secret"
    proxy_namespace: str = "default"
    proxy_name: str = "gitea-auth-proxy"
    proxy_tls_secret: str = "gitea-proxy-tls"
    proxy_ca_configmap: str = "gitea-proxy-ca"
    proxy_config_configmap: str = "gitea-auth-proxy-config"
    proxy_image: str = "nginx:alpine"
    cert_days: int = 3650
    coredns_ip: str | None = None  # discovered from kube-dns when not given
    ingress_namespace: str = "gitea-system"
    ingress_name: str = "gitea-k3s-alias-tls"
    gitea_service: str = "gitea-http"
    gitea_port: int = 3000
    workloads_namespace: str = "default"
    manifests: tuple[str, ...] = ()
    runner_namespace: str = "default"
    runner_service_account: str = "gwa-actions-runner"
    runner_role: str = "gwa-actions-runner"
    workflow: str = ".github/workflows/build-image.yml"
    # ci.repo_dir: the checkout of the repository the workflow belongs to (relative paths: from the plan
    # file's folder). Only with it does stage "CI and RBAC" write the workflow file; ci.branch triggers it.
    ci_repo_dir: str | None = None
    ci_branch: str = "main"
    vault_path: str | None = None  # optional ESO export: e.g. secret/gitea/registry
    wizard_namespace: str = "kube-system"  # where the short-lived node pods run
    helper_image: str = "alpine:3.20"
    context: str | None = None
    resolve: tuple[str, ...] = ()
    source_path: str = field(default="", compare=False)

    # ---------------------------------------------------------------- derived names
    @property
    def realm_host(self) -> str:
        """host[:port] of Gitea's ROOT_URL: where every client fetches tokens."""
        return urlsplit(self.root_url).netloc

    @property
    def realm_hostname(self) -> str:
        return urlsplit(self.root_url).hostname or ""

    @property
    def realm(self) -> str:
        return self.root_url.rstrip("/") + "/v2/token"

    @property
    def node_hosts(self) -> tuple[str, ...]:
        """The registries.yaml entries the guide writes: registry, legacy hosts, realm."""
        out = [self.registry_host, *self.legacy_hosts, self.realm_host]
        return tuple(dict.fromkeys(out))

    @property
    def registry_url(self) -> str:
        return f"https://{self.registry_host}"


# -------------------------------------------------------------------- the YAML shape
SCHEMA: dict[str, dict[str, str]] = {
    "gitea": {"internal_service": "internal_service", "root_url": "root_url", "username": "username", "org": "org",
              "service": "gitea_service", "port": "gitea_port"},
    "registry": {"host": "registry_host", "legacy_hosts": "legacy_hosts", "ca_file": "registry_ca_file",
                 "node_tls": "node_tls"},
    "secrets": {"namespace": "secrets_namespace", "push": "push_secret", "pull": "pull_secret",
                "replaces": "old_pull_secret"},
    "proxy": {"namespace": "proxy_namespace", "name": "proxy_name", "tls_secret": "proxy_tls_secret",
              "ca_configmap": "proxy_ca_configmap", "config_configmap": "proxy_config_configmap",
              "image": "proxy_image", "cert_days": "cert_days", "coredns_ip": "coredns_ip"},
    "ingress": {"namespace": "ingress_namespace", "name": "ingress_name"},
    "workloads": {"namespace": "workloads_namespace", "manifests": "manifests"},
    "ci": {"namespace": "runner_namespace", "service_account": "runner_service_account", "role": "runner_role",
           "workflow": "workflow", "repo_dir": "ci_repo_dir", "branch": "ci_branch"},
    "vault": {"path": "vault_path"},
    "cluster": {"context": "context", "wizard_namespace": "wizard_namespace", "helper_image": "helper_image"},
    "network": {"resolve": "resolve"},
}
TOP_LEVEL = set(SCHEMA) | {"version", "images"}
_FIELD_TYPES = {f.name: f.type for f in fields(Plan)}


def load(path: str | Path) -> Plan:
    """Read and validate a plan file; raises PlanError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise PlanError([f"plan: {path}: file not found; write one with `ghcr2gitea init > plan.yaml`"]) from None
    except OSError as e:
        raise PlanError([f"plan: {path}: cannot read ({e.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "?"
        raise PlanError([f"plan: {path}: not valid YAML at {where}: {getattr(e, 'problem', e)}; fix the syntax"]) \
            from None
    return from_dict(data, source=str(p))


def from_dict(data, source: str = "") -> Plan:
    problems: list[str] = []
    if not isinstance(data, dict):
        raise PlanError([f"plan: {source or '<plan>'}: expected a mapping of sections (gitea, registry, images, …), "
                         f"got {type(data).__name__}"])
    values: dict = {}
    for key, section in data.items():
        if key not in TOP_LEVEL:
            problems.append(_problem(key, key, f"unknown section; known: {', '.join(sorted(TOP_LEVEL))}"))
            continue
        if key == "version":
            if section != 1:
                problems.append(_problem("version", section, "this ghcr2gitea reads plan version 1"))
            continue
        if key == "images":
            values["images"] = _images(section, problems)
            continue
        if section is None:
            continue
        if not isinstance(section, dict):
            problems.append(_problem(key, section, "expected a mapping"))
            continue
        for k, v in section.items():
            attr = SCHEMA[key].get(k)
            if attr is None:
                problems.append(_problem(f"{key}.{k}", k, f"unknown key; known in {key}: "
                                         f"{', '.join(sorted(SCHEMA[key]))}"))
                continue
            values[attr] = v
    # types
    for attr, v in list(values.items()):
        typ = str(_FIELD_TYPES.get(attr, ""))
        path = _path_of(attr)
        if attr == "images":
            continue
        if v is None:
            values.pop(attr)
            continue
        if "tuple" in typ:
            if isinstance(v, str):
                v = [v]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                problems.append(_problem(path, v, "expected a list of strings"))
                values.pop(attr)
                continue
            values[attr] = tuple(v)
        elif typ == "int":
            if not isinstance(v, int) or isinstance(v, bool):
                problems.append(_problem(path, v, "expected a whole number"))
                values.pop(attr)
        elif not isinstance(v, str):
            problems.append(_problem(path, v, "expected a string"))
            values.pop(attr)
    for attr, v in values.items():
        texts = [v] if isinstance(v, str) else list(v) if isinstance(v, tuple) and attr != "images" else []
        if attr == "images":
            texts = [t for img in v for t in (img.source, img.target)]
        if any("CHANGE-ME" in t for t in texts):
            problems.append(_problem(_path_of(attr), v if isinstance(v, str) else texts,
                                     "replace CHANGE-ME with the real value (see the comment beside it)"))
    plan = Plan(**values, source_path=source)
    problems += validate(plan, explicit=set(values))
    if problems:
        raise PlanError(problems)
    return plan


def _path_of(attr: str) -> str:
    for section, keys in SCHEMA.items():
        for k, a in keys.items():
            if a == attr:
                return f"{section}.{k}"
    return attr


_IMAGE_KEYS = {"source", "target", "dockerfile", "context", "paths"}


def _images(section, problems: list[str]) -> tuple[Image, ...]:
    if not isinstance(section, list):
        problems.append(_problem("images", section, "expected a list of {source, target}"))
        return ()
    out = []
    for i, item in enumerate(section):
        if not isinstance(item, dict) or set(item) - _IMAGE_KEYS or not {"source", "target"} <= set(item):
            problems.append(_problem(f"images[{i}]", item, "each image needs `source` (ghcr.io/ORG/NAME) and "
                                     "`target` (REGISTRY/ORG/NAME); optional: dockerfile, context, paths (CI)"))
            continue
        build = {}
        for key in ("dockerfile", "context"):
            if key in item:
                if not isinstance(item[key], str) or not item[key]:
                    problems.append(_problem(f"images[{i}].{key}", item[key], "expected a path in the repository"))
                else:
                    build[key] = item[key]
        if "paths" in item:
            paths = [item["paths"]] if isinstance(item["paths"], str) else item["paths"]
            if not isinstance(paths, list) or not paths or not all(isinstance(x, str) and x for x in paths):
                problems.append(_problem(f"images[{i}].paths", item["paths"], "expected a list of path patterns, "
                                         "e.g. [services/webhook/*]"))
            else:
                build["paths"] = tuple(paths)
        out.append(Image(str(item["source"]), str(item["target"]), **build))
    return tuple(out)


def validate(plan: Plan, explicit: set[str] = frozenset()) -> list[str]:
    problems: list[str] = []
    # Gitea's ROOT_URL: the realm every client must reach over HTTPS
    u = urlsplit(plan.root_url or "")
    if not plan.root_url:
        problems.append(_problem("gitea.root_url", plan.root_url, "set Gitea's ROOT_URL, e.g. https://gitea.example.com/"
                                 " (the auth realm is ROOT_URL + v2/token)"))
    elif u.scheme != "https" or not u.hostname:
        problems.append(_problem("gitea.root_url", plan.root_url, "must be an https:// URL: Docker clients fetch "
                                 "tokens from ROOT_URL over HTTPS and no client flag changes that"))
    else:
        check_host("gitea.root_url", u.netloc, problems, for_containerd=True)
    check_host("registry.host", plan.registry_host, problems, for_containerd=True)
    for i, h in enumerate(plan.legacy_hosts):
        check_host(f"registry.legacy_hosts[{i}]", h, problems, for_containerd=True)
    host, port = split_host_port(plan.internal_service)
    if not plan.internal_service or port is None or not HOSTNAME.match(host):
        problems.append(_problem("gitea.internal_service", plan.internal_service,
                                 "expected NAME.NAMESPACE.svc.cluster.local:PORT of Gitea's HTTP service"))
    if plan.node_tls not in ("skip_verify", "ca"):
        problems.append(_problem("registry.node_tls", plan.node_tls, "use skip_verify (the guide) or ca"))
    if plan.node_tls == "ca" and not plan.registry_ca_file:
        problems.append(_problem("registry.node_tls", plan.node_tls, "node_tls: ca needs registry.ca_file"))
    if plan.registry_ca_file and not Path(plan.registry_ca_file).is_file():
        problems.append(_problem("registry.ca_file", plan.registry_ca_file, "file not found"))
    if not plan.org:
        problems.append(_problem("gitea.org", plan.org, "set the Gitea organisation that owns the images"))
    elif not GITEA_NAME.match(plan.org):
        problems.append(_problem("gitea.org", plan.org, "not a valid Gitea organisation name (letters, digits, "
                                 "'-', '_' and '.')"))
    if not plan.username:
        problems.append(_problem("gitea.username", plan.username, "set the Gitea user the token belongs to"))
    if not plan.images:
        problems.append(_problem("images", [], "list the images to migrate: - {source: ghcr.io/ORG/NAME, "
                                 "target: REGISTRY/ORG/NAME}"))
    for i, img in enumerate(plan.images):
        if not img.source.startswith("ghcr.io/") or img.source.count("/") < 2:
            problems.append(_problem(f"images[{i}].source", img.source, "expected ghcr.io/ORG/NAME (no tag)"))
        if ":" in img.source.rsplit("/", 1)[-1] or "@" in img.source:
            problems.append(_problem(f"images[{i}].source", img.source, "leave out the tag: tags and digests are kept"))
        tgt_host = img.target.split("/", 1)[0]
        if plan.registry_host and tgt_host != plan.registry_host:
            problems.append(_problem(f"images[{i}].target", img.target,
                                     f"must be on registry.host ({plan.registry_host}/ORG/NAME): that is the host "
                                     "nodes pull from"))
        if ":" in img.target.rsplit("/", 1)[-1] or "@" in img.target:
            problems.append(_problem(f"images[{i}].target", img.target, "leave out the tag: tags and digests are kept"))
    for attr in ("secrets_namespace", "proxy_namespace", "ingress_namespace", "workloads_namespace",
                 "runner_namespace", "wizard_namespace"):
        v = getattr(plan, attr)
        if not DNS_LABEL.match(v):
            problems.append(_problem(_path_of(attr), v, "not a valid namespace name (lowercase letters, digits, '-')"))
    for attr in ("push_secret", "pull_secret", "old_pull_secret", "proxy_name", "proxy_tls_secret",
                 "proxy_ca_configmap", "proxy_config_configmap", "ingress_name", "gitea_service",
                 "runner_service_account", "runner_role"):
        v = getattr(plan, attr)
        if not K8S_NAME.match(v):
            problems.append(_problem(_path_of(attr), v, "not a valid Kubernetes object name"))
    if not 1 <= plan.cert_days <= 36500:
        problems.append(_problem("proxy.cert_days", plan.cert_days, "choose a validity between 1 and 36500 days"))
    if plan.coredns_ip is not None:
        try:
            ipaddress.ip_address(plan.coredns_ip)
        except ValueError:
            problems.append(_problem("proxy.coredns_ip", plan.coredns_ip, "expected an IP address (kube-dns's "
                                     "ClusterIP), or leave it out to discover it"))
    for i, r in enumerate(plan.resolve):
        parts = r.rsplit(":", 2)
        ok = len(parts) == 3 and parts[1].isdigit()
        if ok:
            try:
                ipaddress.ip_address(parts[2].strip("[]"))
            except ValueError:
                ok = False
        if not ok:
            problems.append(_problem(f"network.resolve[{i}]", r, "expected HOST:PORT:ADDRESS, as curl --resolve"))
    return problems


def parse_resolve(entries: tuple[str, ...] | list[str]) -> dict[tuple[str, int], str]:
    out = {}
    for r in entries:
        host, port, addr = r.rsplit(":", 2)
        out[(host.lower(), int(port))] = addr.strip("[]")
    return out
