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

from . import yamlsafe

# ---------------------------------------------------------------------------------------------- grammars
# Every value below reaches a node script, a pod spec, an nginx config, a workflow, a URL or a file
# path. Each grammar is ASCII-only and anchored with \Z (``$`` would let a trailing newline through).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\Z", re.ASCII)
IPV4 = re.compile(r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))"
                  r"{3}\Z", re.ASCII)
IPV6_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}\Z", re.ASCII)
PORT = re.compile(r"[1-9][0-9]{0,4}\Z", re.ASCII)
# Kubernetes: namespaces are DNS-1123 labels, Services DNS-1035 labels, other objects DNS-1123 subdomains
DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?\Z", re.ASCII)
DNS1035_LABEL = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?\Z", re.ASCII)
K8S_NAME = re.compile(r"(?=.{1,253}\Z)[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z",
                      re.ASCII)
# the OCI distribution spec's repository name grammar (lowercase), one component and a whole path
OCI_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
OCI_PATH = re.compile(rf"(?=.{{1,255}}\Z){OCI_COMPONENT}(?:/{OCI_COMPONENT})*\Z", re.ASCII)
OCI_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
OCI_DIGEST = r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}"
_REF_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?))*" \
              r"(?::[0-9]{1,5})?"
IMAGE_REF = re.compile(rf"(?=.{{1,512}}\Z)(?:{_REF_DOMAIN}/)?{OCI_COMPONENT}(?:/{OCI_COMPONENT})*"
                       rf"(?::{OCI_TAG})?(?:@{OCI_DIGEST})?\Z", re.ASCII)
# Gitea: an organisation is also the first component of every image path (lowercase, OCI); a user name
# follows Gitea's IsValidUsername: alphanumerics and single - _ . between them, at most 40 characters
GITEA_ORG = re.compile(r"(?=.{1,40}\Z)[a-z0-9]+(?:[._-][a-z0-9]+)*\Z", re.ASCII)
GITEA_USER = re.compile(r"(?=.{1,40}\Z)[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*\Z", re.ASCII)
GIT_BRANCH = re.compile(r"(?=.{1,255}\Z)(?!/)(?!.*(?:\.\.|//|@\{|/\.|\.lock(?:/|\Z)))[A-Za-z0-9._/-]*[A-Za-z0-9_-]\Z",
                        re.ASCII)
# a URL path (ROOT_URL's): RFC 3986 path characters without quotes, spaces, \, $, `, ;, &, (, ), *, !
URL_PATH = re.compile(r"(?:/(?:[A-Za-z0-9._~+=,@:-]|%[0-9A-Fa-f]{2})*)*\Z", re.ASCII)
VAULT_PATH = re.compile(r"(?=.{1,255}\Z)[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*\Z", re.ASCII)
MAX_LEN = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
CLUSTER_DNS_SUFFIXES = (".svc.cluster.local", ".svc", ".cluster.local")


class PlanError(Exception):
    """One or more problems with the plan; each line names the field, the value and the fix."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _problem(path: str, value, fix: str) -> str:
    shown = value if isinstance(value, (int, float)) else repr(value)
    if isinstance(shown, str) and len(shown) > 120:  # an over-long value is named, not printed whole
        shown = shown[:100] + f"…' ({len(value) if isinstance(value, str) else len(shown)} characters)"
    return f"plan: {path}: {shown}: {fix}"


def text_problem(value: str, *, limit: int = MAX_LEN) -> str | None:
    """What every string field must satisfy: no NUL, control or invisible characters, at most ``limit`` long."""
    if len(value) > limit:
        return f"too long ({len(value)} characters, at most {limit})"
    if "\x00" in value:
        return "contains a NUL character: remove it"
    if _CONTROL.search(value):
        return "contains a control or invisible character (a newline, tab, escape, bidi mark, …): remove it"
    return None


def is_cluster_dns(host: str) -> bool:
    h = host.split(":")[0].rstrip(".").lower()
    return h.endswith(CLUSTER_DNS_SUFFIXES)


def split_host_port(hostport: str) -> tuple[str, int | None]:
    """``name``, ``name:port``, ``[v6]`` or ``[v6]:port`` → (host without brackets, port); ports in ASCII digits."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and PORT.match(rest[1:]) else None
    host, sep, port = hostport.rpartition(":")
    if sep and PORT.match(port) and ":" not in host:
        return host, int(port)
    return hostport, None


def host_problem(value, *, port: str = "optional", allow_ip: bool = True) -> str | None:
    """THE host grammar: why ``value`` is not ``HOST[:PORT]``, or None.

    HOST is an RFC 1123 name (ASCII letters, digits, '-' and '.'), an IPv4 dotted quad, or a
    bracketed IPv6 address without a zone id (``[fe80::1]``; ``%…`` never). PORT is 1–65535 in ASCII
    digits. ``port`` is ``optional``, ``required`` or ``forbidden``.
    """
    if not isinstance(value, str) or not value:
        return "expected a host name like registry.example.com"
    if (bad := text_problem(value, limit=260)) is not None:
        return bad
    if not value.isascii():
        return "not a valid host name: only ASCII letters, digits, '-' and '.' (a look-alike letter or digit?)"
    if "://" in value or ("/" in value and not value.startswith("[")):
        return "write the host only (no scheme or path), e.g. registry.example.com"
    if value.startswith("["):
        inner, close, rest = value[1:].partition("]")
        if not close:
            return "an IPv6 address must be written in brackets, e.g. [fd00::1]"
        if "%" in inner:
            return "an IPv6 zone id (%…) is not allowed: use a global or unique-local address"
        if not IPV6_TEXT.match(inner):
            return "not a valid IPv6 address"
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return "not a valid IPv6 address"
        if rest and not rest.startswith(":"):
            return "expected [IPV6] or [IPV6]:PORT"
        port_text = rest[1:] if rest else None
        is_ip = True
        host = inner
    else:
        if value.count(":") > 1:
            return "write an IPv6 address in brackets, e.g. [fd00::1]:5000"
        host, sep, port_text = value.partition(":")
        if not sep:
            port_text = None
        is_ip = bool(IPV4.match(host))
        if not is_ip:
            if not HOSTNAME.match(host):
                return "not a valid host name (letters, digits, '-' and '.' only)"
            if re.fullmatch(r"[0-9.]+", host.rstrip(".")) or host.rstrip(".").rsplit(".", 1)[-1].isdigit():
                return "not a valid IPv4 address (four numbers 0-255) nor a host name"
    if port_text is not None:
        if port == "forbidden":
            return "leave out the port"
        if not PORT.match(port_text) or not 0 < int(port_text) < 65536:
            return "the port must be between 1 and 65535"
    elif port == "required":
        return "add the port, e.g. :3000"
    if is_ip and not allow_ip:
        return "expected a host name, not an IP address"
    return None


def check_host(path: str, value, problems: list[str], *, for_containerd: bool = False, port_ok: bool = True) -> None:
    """A registry host as containerd and image references write it: name[:port]."""
    bad = host_problem(value, port="optional" if port_ok else "forbidden")
    if bad is not None:
        problems.append(_problem(path, value, bad))
        return
    host, _ = split_host_port(value)
    if for_containerd and is_cluster_dns(host):
        problems.append(_problem(path, value, "containerd runs on the node, not in the cluster, and cannot resolve "
                                 "cluster DNS names: use the external registry host name or an IP"))


def ip_problem(value) -> str | None:
    """An IPv4 dotted quad or an IPv6 address (no brackets, no zone id)."""
    if not isinstance(value, str) or IPV4.match(value):
        return None if isinstance(value, str) else "expected an IP address"
    if value.isascii() and IPV6_TEXT.match(value) and ":" in value:
        try:
            ipaddress.IPv6Address(value)
            return None
        except ValueError:
            pass
    return "expected an IP address"


def path_problem(value: str, *, relative: bool = False) -> str | None:
    """A file path: no NUL, control characters or newlines; ``relative``: inside the folder, no ``..``."""
    if not value:
        return "expected a path"
    if (bad := text_problem(value)) is not None:
        return bad
    if relative and (value.startswith(("/", "~")) or ".." in value.replace("\\", "/").split("/")):
        return "must be a relative path inside the repository, without '..'"
    return None


def repo_path_problem(value: str) -> str | None:
    """A path or pattern in the application repository (Dockerfile, context, change patterns).

    They reach Kaniko's arguments and the workflow's shell; besides ``path_problem`` they hold no
    quotes, ``$``, backticks or backslashes and never leave the repository.
    """
    if (bad := path_problem(value, relative=True)) is not None:
        return bad
    if re.search(r"[\s'\"`$\\;&|<>(){}]", value):
        return "use letters, digits and / . _ - * ? [ ] only (no spaces, quotes, $, backticks or backslashes)"
    return None


def registry_url_problem(value: str) -> str | None:
    """``https://HOST[:PORT]``: a registry's base URL (HOST as ``host_problem``), no user, path, query or fragment."""
    if not isinstance(value, str) or not value:
        return "expected https://HOST[:PORT], e.g. https://ghcr.io"
    if (bad := text_problem(value, limit=300)) is not None:
        return bad
    if not value.isascii() or not value.startswith("https://"):
        return "must be an https:// URL, e.g. https://ghcr.io (the images are read over HTTPS only)"
    netloc = value[len("https://"):].removesuffix("/")
    if not netloc or re.search(r"[/?#@]", netloc):
        return "write https://HOST[:PORT] only: no user, path, query or fragment"
    if (bad := host_problem(netloc)) is not None:
        return f"the host {netloc!r}: {bad}"
    return None


def root_url_problem(value: str) -> str | None:
    """``https://HOST[:PORT][/PATH]``: HOST as ``host_problem``, a plain path, no user, query or fragment."""
    if (bad := text_problem(value)) is not None:
        return bad
    m = re.fullmatch(r"https://([^/?#]*)(/[^?#]*)?", value, re.ASCII) if value.isascii() else None
    if m is None:
        if re.match(r"https://", value, re.IGNORECASE) and value.isascii():
            return "no user, query or fragment: Gitea's ROOT_URL is https://HOST[:PORT]/[PATH/]"
        return None  # the scheme check names it
    netloc, path = m.group(1), m.group(2) or ""
    if "@" in netloc:
        return "no user name in ROOT_URL: it is https://HOST[:PORT]/[PATH/]"
    if (bad := host_problem(netloc)) is not None:
        return f"the host {netloc!r}: {bad}"
    if not URL_PATH.match(path):
        return "the path may hold letters, digits and . _ ~ + = , @ : - and %XX only (no quotes, spaces, " \
               "backslashes, $ or backticks)"
    return None


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
    # ghcr: the source registry the Images stage copies from (a mirror or a test registry may stand in)
    ghcr_url: str = "https://ghcr.io"
    ghcr_ca_file: str | None = None  # CA bundle for it (default: the system roots)
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
    # workloads.pin_digests: the Workloads stage writes <target>@sha256:<digest> (the digest the pods run now,
    # which Gitea holds) instead of <target>:<tag>, in live workloads and in the manifest files
    pin_digests: bool = False
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

    @property
    def source_url(self) -> str:
        """The source registry's base URL (``ghcr.url``), without a trailing slash."""
        return self.ghcr_url.rstrip("/")


# -------------------------------------------------------------------- the YAML shape
SCHEMA: dict[str, dict[str, str]] = {
    "gitea": {"internal_service": "internal_service", "root_url": "root_url", "username": "username", "org": "org",
              "service": "gitea_service", "port": "gitea_port"},
    "registry": {"host": "registry_host", "legacy_hosts": "legacy_hosts", "ca_file": "registry_ca_file",
                 "node_tls": "node_tls"},
    "ghcr": {"url": "ghcr_url", "ca_file": "ghcr_ca_file"},
    "secrets": {"namespace": "secrets_namespace", "push": "push_secret", "pull": "pull_secret",
                "replaces": "old_pull_secret"},
    "proxy": {"namespace": "proxy_namespace", "name": "proxy_name", "tls_secret": "proxy_tls_secret",
              "ca_configmap": "proxy_ca_configmap", "config_configmap": "proxy_config_configmap",
              "image": "proxy_image", "cert_days": "cert_days", "coredns_ip": "coredns_ip"},
    "ingress": {"namespace": "ingress_namespace", "name": "ingress_name"},
    "workloads": {"namespace": "workloads_namespace", "manifests": "manifests", "pin_digests": "pin_digests"},
    "ci": {"namespace": "runner_namespace", "service_account": "runner_service_account", "role": "runner_role",
           "workflow": "workflow", "repo_dir": "ci_repo_dir", "branch": "ci_branch"},
    "vault": {"path": "vault_path"},
    "cluster": {"context": "context", "wizard_namespace": "wizard_namespace", "helper_image": "helper_image"},
    "network": {"resolve": "resolve"},
}
TOP_LEVEL = set(SCHEMA) | {"version", "images"}
_FIELD_TYPES = {f.name: f.type for f in fields(Plan)}


def load(path: str | Path) -> Plan:
    """Read and validate a plan file; raises PlanError listing every problem.

    The YAML is read with ``yamlsafe``: duplicate keys, anchors/aliases, nesting past 64 levels and
    files over 1 MiB are refused, each as one line, before anything is expanded.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(yamlsafe.MAX_BYTES + 1)
    except FileNotFoundError:
        raise PlanError([f"plan: {path}: file not found; write one with `ghcr2gitea init > plan.yaml`"]) from None
    except IsADirectoryError:
        raise PlanError([f"plan: {path}: is a folder; name the plan file"]) from None
    except OSError as e:
        raise PlanError([f"plan: {path}: cannot read ({e.strerror})"]) from None
    if len(raw) > yamlsafe.MAX_BYTES:
        raise PlanError([f"plan: {path}: over {yamlsafe.MAX_BYTES} bytes: a plan is a few kilobytes; "
                         "name the right file"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PlanError([f"plan: {path}: not UTF-8 text (byte {e.start}): save the plan as UTF-8"]) from None
    return loads(text, source=str(p))


def loads(text: str, source: str = "<plan>") -> Plan:
    """Parse and validate plan text (what ``load`` reads from a file)."""
    try:
        data = yamlsafe.load(text)
    except yamlsafe.YamlRefused as e:
        raise PlanError([f"plan: {source}: {e}"]) from None
    except yaml.YAMLError as e:
        raise PlanError([f"plan: {source}: {yamlsafe.describe_error(e, text)}; fix the syntax"]) from None
    return from_dict(data, source=source)


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
        elif typ == "bool":
            if not isinstance(v, bool):
                problems.append(_problem(path, v, "expected true or false (unquoted)"))
                values.pop(attr)
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
        if not all(isinstance(item[k], str) for k in ("source", "target")):
            for k in ("source", "target"):
                if not isinstance(item[k], str):
                    problems.append(_problem(f"images[{i}].{k}", item[k], "expected a string"))
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
    # every string: no NUL, control characters or over-long values, whatever the field
    texts_ok: set[str] = set()
    for f in fields(Plan):
        if f.name in ("images", "source_path"):
            continue
        v = getattr(plan, f.name)
        items = [(_path_of(f.name), v)] if isinstance(v, str) else \
            [(f"{_path_of(f.name)}[{i}]", x) for i, x in enumerate(v)] if isinstance(v, tuple) else []
        bad_here = False
        for path, x in items:
            if isinstance(x, str) and (bad := text_problem(x)) is not None:
                problems.append(_problem(path, x, bad))
                bad_here = True
        if not bad_here:
            texts_ok.add(f.name)
    for i, img in enumerate(plan.images):
        for key in ("source", "target", "dockerfile", "context"):
            if (bad := text_problem(getattr(img, key))) is not None:
                problems.append(_problem(f"images[{i}].{key}", getattr(img, key), bad))
        for j, pat in enumerate(img.paths):
            if (bad := text_problem(pat)) is not None:
                problems.append(_problem(f"images[{i}].paths[{j}]", pat, bad))

    def ok(attr: str) -> bool:  # the generic check already named this field
        return attr in texts_ok

    # Gitea's ROOT_URL: the realm every client must reach over HTTPS
    u = urlsplit(plan.root_url or "") if ok("root_url") else None
    if not plan.root_url:
        problems.append(_problem("gitea.root_url", plan.root_url, "set Gitea's ROOT_URL, e.g. https://gitea.example.com/"
                                 " (the auth realm is ROOT_URL + v2/token)"))
    elif u is None:
        pass
    elif not plan.root_url.startswith("https://") or not u.netloc:
        problems.append(_problem("gitea.root_url", plan.root_url, "must be an https:// URL: Docker clients fetch "
                                 "tokens from ROOT_URL over HTTPS and no client flag changes that"))
    elif (bad := root_url_problem(plan.root_url)) is not None:
        problems.append(_problem("gitea.root_url", plan.root_url, bad))
    else:
        check_host("gitea.root_url", u.netloc, problems, for_containerd=True)
    if ok("registry_host"):
        check_host("registry.host", plan.registry_host, problems, for_containerd=True)
    # a registry.host outside the grammar is not repeated in the fixes below (they would print it raw)
    registry_host = plan.registry_host if ok("registry_host") and host_problem(plan.registry_host) is None else ""
    if ok("legacy_hosts"):
        for i, h in enumerate(plan.legacy_hosts):
            check_host(f"registry.legacy_hosts[{i}]", h, problems, for_containerd=True)
    if ok("internal_service"):
        bad = host_problem(plan.internal_service, port="required", allow_ip=False) if plan.internal_service else "x"
        if bad is None and not DNS1035_LABEL.match(plan.internal_service.split(".")[0].split(":")[0]):
            bad = "x"
        if bad is not None:
            problems.append(_problem("gitea.internal_service", plan.internal_service,
                                     "expected NAME.NAMESPACE.svc.cluster.local:PORT of Gitea's HTTP service"))
    if ok("ghcr_url") and (bad := registry_url_problem(plan.ghcr_url)) is not None:
        problems.append(_problem("ghcr.url", plan.ghcr_url, bad))
    if plan.ghcr_ca_file and ok("ghcr_ca_file"):
        if (bad := path_problem(plan.ghcr_ca_file)) is not None:
            problems.append(_problem("ghcr.ca_file", plan.ghcr_ca_file, bad))
        elif not Path(plan.ghcr_ca_file).is_file():
            problems.append(_problem("ghcr.ca_file", plan.ghcr_ca_file, "file not found"))
    if plan.node_tls not in ("skip_verify", "ca"):
        problems.append(_problem("registry.node_tls", plan.node_tls, "use skip_verify (the guide) or ca"))
    if plan.node_tls == "ca" and not plan.registry_ca_file:
        problems.append(_problem("registry.node_tls", plan.node_tls, "node_tls: ca needs registry.ca_file"))
    if plan.registry_ca_file and ok("registry_ca_file"):
        if (bad := path_problem(plan.registry_ca_file)) is not None:
            problems.append(_problem("registry.ca_file", plan.registry_ca_file, bad))
        elif not Path(plan.registry_ca_file).is_file():
            problems.append(_problem("registry.ca_file", plan.registry_ca_file, "file not found"))
    if not plan.org:
        problems.append(_problem("gitea.org", plan.org, "set the Gitea organisation that owns the images"))
    elif ok("org") and not GITEA_ORG.match(plan.org):
        problems.append(_problem("gitea.org", plan.org, "not a valid Gitea organisation name for image paths "
                                 "(lowercase letters and digits, single '-', '_' or '.' between them, at most 40)"))
    if not plan.username:
        problems.append(_problem("gitea.username", plan.username, "set the Gitea user the token belongs to"))
    elif ok("username") and not GITEA_USER.match(plan.username):
        problems.append(_problem("gitea.username", plan.username, "not a valid Gitea user name (letters and digits, "
                                 "single '-', '_' or '.' between them, at most 40)"))
    if not plan.images:
        problems.append(_problem("images", [], "list the images to migrate: - {source: ghcr.io/ORG/NAME, "
                                 "target: REGISTRY/ORG/NAME}"))
    for i, img in enumerate(plan.images):
        if any(text_problem(getattr(img, k)) for k in ("source", "target", "dockerfile", "context")):
            continue  # already named
        tagged_source = ":" in img.source.rsplit("/", 1)[-1] or "@" in img.source
        if not img.source.startswith("ghcr.io/") or img.source.count("/") < 2:
            problems.append(_problem(f"images[{i}].source", img.source, "expected ghcr.io/ORG/NAME (no tag)"))
        elif tagged_source:
            problems.append(_problem(f"images[{i}].source", img.source, "leave out the tag: tags and digests are kept"))
        elif not OCI_PATH.match(img.source[len("ghcr.io/"):]):
            problems.append(_problem(f"images[{i}].source", img.source, "expected ghcr.io/ORG/NAME: lowercase letters "
                                     "and digits with single '.', '_', '__' or '-' runs between them (the OCI name "
                                     "grammar)"))
        tgt_host = img.target.split("/", 1)[0]
        if registry_host and tgt_host != registry_host:
            problems.append(_problem(f"images[{i}].target", img.target,
                                     f"must be on registry.host ({registry_host}/ORG/NAME): that is the host "
                                     "nodes pull from"))
        elif ":" in img.target.rsplit("/", 1)[-1] or "@" in img.target:
            problems.append(_problem(f"images[{i}].target", img.target, "leave out the tag: tags and digests are kept"))
        elif registry_host:
            repo = img.target[len(registry_host) + 1:]
            if not OCI_PATH.match(repo) or "/" not in repo:
                problems.append(_problem(f"images[{i}].target", img.target, "expected REGISTRY/ORG/NAME: lowercase "
                                         "letters and digits with single '.', '_', '__' or '-' runs between them "
                                         "(the OCI name grammar)"))
            elif ok("org") and GITEA_ORG.match(plan.org) and repo.split("/", 1)[0] != plan.org:
                problems.append(_problem(f"images[{i}].target", img.target, f"must be in gitea.org "
                                         f"({registry_host}/{plan.org}/NAME): Gitea keeps the images under the "
                                         "organisation the token can push to"))
        for key in ("dockerfile", "context"):
            if (bad := repo_path_problem(getattr(img, key))) is not None:
                problems.append(_problem(f"images[{i}].{key}", getattr(img, key), bad))
        for j, pat in enumerate(img.paths):
            if not text_problem(pat) and (bad := repo_path_problem(pat)) is not None:
                problems.append(_problem(f"images[{i}].paths[{j}]", pat, bad))
    for attr in ("secrets_namespace", "proxy_namespace", "ingress_namespace", "workloads_namespace",
                 "runner_namespace", "wizard_namespace"):
        v = getattr(plan, attr)
        if ok(attr) and not DNS_LABEL.match(v):
            problems.append(_problem(_path_of(attr), v, "not a valid namespace name (a DNS-1123 label: lowercase "
                                     "letters, digits and '-', at most 63)"))
    for attr in ("proxy_name", "gitea_service"):
        v = getattr(plan, attr)
        if ok(attr) and not DNS1035_LABEL.match(v):
            problems.append(_problem(_path_of(attr), v, "not a valid Kubernetes object name for a Service (a DNS-1035 "
                                     "label: a lowercase letter, then lowercase letters, digits and '-', at most 63)"))
    for attr in ("push_secret", "pull_secret", "old_pull_secret", "proxy_tls_secret",
                 "proxy_ca_configmap", "proxy_config_configmap", "ingress_name",
                 "runner_service_account", "runner_role"):
        v = getattr(plan, attr)
        if ok(attr) and not K8S_NAME.match(v):
            problems.append(_problem(_path_of(attr), v, "not a valid Kubernetes object name (a DNS-1123 subdomain: "
                                     "lowercase letters, digits, '-' and '.' between them, at most 253)"))
    for attr in ("helper_image", "proxy_image"):
        v = getattr(plan, attr)
        if ok(attr) and not IMAGE_REF.match(v):
            problems.append(_problem(_path_of(attr), v, "not a valid container image reference "
                                     "([REGISTRY/]PATH[:TAG][@DIGEST], e.g. alpine:3.20)"))
    if ok("workflow") and (bad := path_problem(plan.workflow, relative=True)) is not None:
        problems.append(_problem("ci.workflow", plan.workflow, bad))
    if plan.ci_repo_dir is not None and ok("ci_repo_dir") and (bad := path_problem(plan.ci_repo_dir)):
        problems.append(_problem("ci.repo_dir", plan.ci_repo_dir, bad))
    if ok("manifests"):
        for i, m in enumerate(plan.manifests):
            if (bad := path_problem(m)) is not None:
                problems.append(_problem(f"workloads.manifests[{i}]", m, bad))
    if ok("ci_branch") and not GIT_BRANCH.match(plan.ci_branch):
        problems.append(_problem("ci.branch", plan.ci_branch, "not a plain git branch name (letters, digits and "
                                 ". _ / -)"))
    if plan.vault_path is not None and ok("vault_path") and not VAULT_PATH.match(plan.vault_path):
        problems.append(_problem("vault.path", plan.vault_path, "expected a Vault KV path like secret/gitea/registry"))
    if plan.context is not None and ok("context") and not plan.context:
        problems.append(_problem("cluster.context", plan.context, "name a kubeconfig context or leave it out"))
    if not 1 <= plan.cert_days <= 36500:
        problems.append(_problem("proxy.cert_days", plan.cert_days, "choose a validity between 1 and 36500 days"))
    if plan.coredns_ip is not None and ok("coredns_ip") and ip_problem(plan.coredns_ip) is not None:
        problems.append(_problem("proxy.coredns_ip", plan.coredns_ip, "expected an IP address (kube-dns's "
                                 "ClusterIP), or leave it out to discover it"))
    if ok("resolve"):
        for i, r in enumerate(plan.resolve):
            if resolve_problem(r) is not None:
                problems.append(_problem(f"network.resolve[{i}]", r, "expected HOST:PORT:ADDRESS, as curl --resolve"))
    return problems


def resolve_problem(entry: str) -> str | None:
    """``HOST:PORT:ADDRESS`` as curl --resolve: HOST and PORT by the host grammar, ADDRESS an IP address."""
    parts = entry.rsplit(":", 2)
    if len(parts) != 3 or host_problem(f"{parts[0]}:{parts[1]}", port="required") is not None \
            or ip_problem(parts[2].strip("[]")) is not None:
        return "expected HOST:PORT:ADDRESS, as curl --resolve"
    return None


def parse_resolve(entries: tuple[str, ...] | list[str]) -> dict[tuple[str, int], str]:
    out = {}
    for r in entries:
        host, port, addr = r.rsplit(":", 2)
        out[(host.lower(), int(port))] = addr.strip("[]")
    return out
