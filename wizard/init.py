"""``ghcr2gitea init``: a starting plan discovered from the current cluster, with comments.

What the cluster can tell is filled in (Gitea's service, the realm host from its Ingresses,
the GHCR images the workloads run, the org); what it cannot is marked CHANGE-ME, which
validation refuses until the operator sets it.

Everything read from the cluster is untrusted data (a tenant writes its own Deployments and
Ingresses): a discovered value goes into the plan only when it passes the plan's own grammar,
and the plan is written by a YAML dumper, never by pasting text. A value left out is reported
as a finding (``found["skipped"]``), one line each, and CHANGE-ME stands in its place.
"""

from __future__ import annotations

from collections import Counter

import yaml

from . import plan as P
from .cluster import ClusterReader

GHCR = "ghcr.io/"


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:100] + f"…' ({len(str(value))} characters)"


def _gitea_service(cluster: ClusterReader, skipped: list[str]) -> tuple[str, str, int] | None:
    candidates = []
    for svc in cluster.list("Service", None):
        md, spec = svc["metadata"], svc.get("spec") or {}
        name, ns = md.get("name", ""), md.get("namespace", "")
        ports = [p.get("port") for p in spec.get("ports") or []]
        if "gitea" not in name or not ports:
            continue
        port = 3000 if 3000 in ports else ports[0]
        if not (isinstance(name, str) and P.DNS1035_LABEL.match(name) and isinstance(ns, str)
                and P.DNS_LABEL.match(ns) and isinstance(port, int) and not isinstance(port, bool)
                and 0 < port < 65536):
            skipped.append(f"init: skipped Service {_shown(ns)}/{_shown(name)} port {_shown(port)}: not a Kubernetes "
                           "Service name, namespace and port the plan accepts")
            continue
        score = ("gitea" in name) * 2 + (name.endswith("-http")) + (3000 in ports)
        candidates.append((score, name, ns, port))
    if not candidates:
        return None
    _, name, ns, port = max(candidates)
    return name, ns, port


def _source_of(image) -> str | None:
    """``ghcr.io/ORG/NAME`` of a container image (tag and digest dropped), or None when it is not one."""
    if not isinstance(image, str) or not image.startswith(GHCR):
        return None
    base = image.split("@")[0]
    if ":" in base.rsplit("/", 1)[-1]:
        base = base.rsplit(":", 1)[0]
    return base


def _image_problem(image: str, source: str) -> str | None:
    if (bad := P.text_problem(image)) is not None:
        return bad
    if not P.IMAGE_REF.match(image):
        return "not a container image reference"
    if source.count("/") < 2 or not P.OCI_PATH.match(source[len(GHCR):]):
        return "not ghcr.io/ORG/NAME in the OCI name grammar"
    return None


def discover(cluster: ClusterReader) -> dict:
    skipped: list[str] = []
    found: dict = {"images": [], "org": None, "realm_host": None, "registry_host": None, "gitea": None,
                   "coredns_ip": None, "nodes": [], "skipped": skipped}
    found["gitea"] = _gitea_service(cluster, skipped)
    dns = cluster.get("Service", "kube-dns", "kube-system")
    ip = (dns or {}).get("spec", {}).get("clusterIP")
    if ip is not None and P.ip_problem(ip) is None:
        found["coredns_ip"] = ip
    elif ip not in (None, "", "None"):
        skipped.append(f"init: skipped kube-system/kube-dns clusterIP {_shown(ip)}: not an IP address")
    from .stages.images import RUNNING_KINDS, list_served, pod_spec
    images: set[str] = set()
    for kind in RUNNING_KINDS:  # what the Images stage copies from: CronJobs, Jobs and bare Pods too
        for obj in list_served(cluster, kind, None):
            md = obj.get("metadata") or {}
            if kind == "Pod" and md.get("ownerReferences"):
                continue  # a controller's pod: its owner is listed
            spec = pod_spec(kind, obj)
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                img = c.get("image", "")
                source = _source_of(img)
                if source is None:
                    continue
                if (bad := _image_problem(img, source)) is not None:
                    skipped.append(f"init: skipped image {_shown(img)} of {kind} "
                                   f"{_shown(md.get('namespace'))}/{_shown(md.get('name'))}: {bad}")
                    continue
                images.add(source)
    found["images"] = sorted(images)
    orgs = Counter(i.split("/")[1] for i in images)
    org = orgs.most_common(1)[0][0] if orgs else None
    if org is not None and not P.GITEA_ORG.match(org):
        skipped.append(f"init: skipped organisation {_shown(org)}: not a Gitea organisation name")
        org = None
    found["org"] = org
    if found["gitea"]:
        name, ns, _ = found["gitea"]
        hosts = []
        for ing in cluster.list("Ingress", ns):
            for rule in (ing.get("spec") or {}).get("rules") or []:
                backends = [p.get("backend", {}).get("service", {}).get("name") for p in
                            (rule.get("http") or {}).get("paths") or []]
                host = rule.get("host")
                if name not in backends or not host:
                    continue
                if (bad := P.host_problem(host, port="forbidden")) is not None:
                    md = ing.get("metadata") or {}
                    skipped.append(f"init: skipped host {_shown(host)} of Ingress {_shown(md.get('namespace'))}/"
                                   f"{_shown(md.get('name'))}: {bad}")
                    continue
                hosts.append(host)
        realm = [h for h in hosts if ".k3s." in h] or [h for h in hosts if h.startswith("gitea.")]
        registry = [h for h in hosts if h.startswith("registry.") and ".k3s." not in h]
        found["realm_host"] = realm[0] if realm else None
        found["registry_host"] = registry[0] if registry else None
    for n in cluster.list("Node"):
        node = (n.get("metadata") or {}).get("name")
        if isinstance(node, str) and P.K8S_NAME.match(node):
            found["nodes"].append(node)
        else:
            skipped.append(f"init: skipped node name {_shown(node)} in the comment: not a Kubernetes name")
    return found


def _dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=False, width=4096)


def _comment(*lines: str) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def render(found: dict, *, context: str | None) -> str:
    """The plan as YAML (dumped, not pasted) with comment lines between its sections."""
    g = found["gitea"]
    internal = f"{g[0]}.{g[1]}.svc.cluster.local:{g[2]}" if g else "CHANGE-ME.gitea-system.svc.cluster.local:3000"
    realm = found["realm_host"] or "CHANGE-ME.example.com"
    registry = found["registry_host"] or "CHANGE-ME.example.com"
    org = found["org"] or "CHANGE-ME"
    # the context is the operator's own flag, but it goes into a comment line: only a plain one
    shown_context = context if context and P.text_problem(context) is None else None
    out = [_comment("ghcr2gitea migration plan — written by `ghcr2gitea init` from the cluster"
                    + (f" (context {shown_context})" if shown_context else "") + ".",
                    "Check every value; CHANGE-ME marks what the cluster could not tell. The token is never here:",
                    "it comes from GITEA_TOKEN or --token-file. Format: docs/plan.md."),
           _dump({"version": 1})]
    if context:
        out += [_comment("cluster.context: the kubeconfig context (--context overrides it)"),
                _dump({"cluster": {"context": context}})]
    else:
        out.append(_comment("cluster:", "  context: my-cluster   # default: the kubeconfig's current context"))
    out += [_comment("gitea.internal_service: Gitea's HTTP service, as pods reach it",
                     "gitea.root_url: Gitea's ROOT_URL, the auth realm every client must reach over HTTPS",
                     "gitea.username: the Gitea user the token belongs to"),
            _dump({"gitea": {"internal_service": internal, "root_url": f"https://{realm}/",
                             "username": "registry-user", "org": org}}),
            _comment("registry.host: the external registry host nodes pull from (never a cluster DNS name)",
                     "registry.legacy_hosts: older registry names manifests may still use",
                     "registry.ca_file: /path/to/ca.crt   # CA this machine uses to verify the registry host"),
            _dump({"registry": {"host": registry, "legacy_hosts": []}}),
            _comment("images: GHCR image -> Gitea image (tags and digests are kept)"),
            _dump({"images": [{"source": img, "target": f"{registry}/{org}/{img.rsplit('/', 1)[-1]}"}
                              for img in found["images"] or ["ghcr.io/CHANGE-ME/CHANGE-ME"]]})]
    if found["coredns_ip"]:
        out += [_comment("proxy.coredns_ip: kube-dns ClusterIP (discovered), the auth proxy's resolver"),
                _dump({"proxy": {"coredns_ip": found["coredns_ip"]}})]
    else:
        out.append(_comment("proxy:", "  coredns_ip: 10.43.0.10   # discovered from kube-dns when left out"))
    out.append(_comment("Object names default to the guide's (secrets.push: gitea-registry-push, secrets.pull:",
                        "gitea-registry-secret, proxy.name: gitea-auth-proxy, ingress.name: gitea-k3s-alias-tls, …).",
                        f"Nodes found: {', '.join(found['nodes'])}"))
    if found.get("skipped"):
        out.append(_comment("Left out (from the cluster, but not valid plan values; see init's stderr):",
                            *(f"  {line.removeprefix('init: ')}" for line in found["skipped"]
                              if P.text_problem(line, limit=4096) is None)))
    return "".join(out)
