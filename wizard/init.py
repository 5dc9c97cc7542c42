"""``ghcr2gitea init``: a starting plan discovered from the current cluster, with comments.

What the cluster can tell is filled in (Gitea's service, the realm host from its Ingresses,
the GHCR images the workloads run, the org); what it cannot is marked CHANGE-ME, which
validation refuses until the operator sets it.
"""

from __future__ import annotations

from collections import Counter

from .cluster import ClusterReader

GHCR = "ghcr.io/"


def _gitea_service(cluster: ClusterReader) -> tuple[str, str, int] | None:
    candidates = []
    for svc in cluster.list("Service", None):
        md, spec = svc["metadata"], svc.get("spec") or {}
        ports = [p.get("port") for p in spec.get("ports") or []]
        score = ("gitea" in md["name"]) * 2 + (md["name"].endswith("-http")) + (3000 in ports)
        if "gitea" in md["name"] and ports:
            candidates.append((score, md["name"], md["namespace"], 3000 if 3000 in ports else ports[0]))
    if not candidates:
        return None
    _, name, ns, port = max(candidates)
    return name, ns, port


def discover(cluster: ClusterReader) -> dict:
    found: dict = {"images": [], "org": None, "realm_host": None, "registry_host": None, "gitea": None,
                   "coredns_ip": None, "nodes": []}
    found["gitea"] = _gitea_service(cluster)
    dns = cluster.get("Service", "kube-dns", "kube-system")
    found["coredns_ip"] = (dns or {}).get("spec", {}).get("clusterIP")
    images: set[str] = set()
    for kind in ("Deployment", "StatefulSet", "DaemonSet"):
        for obj in cluster.list(kind, None):
            spec = obj["spec"]["template"]["spec"]
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                img = c.get("image", "")
                if img.startswith(GHCR):
                    images.add(img.split("@")[0].rsplit(":", 1)[0] if ":" in img.rsplit("/", 1)[-1]
                               else img.split("@")[0])
    found["images"] = sorted(images)
    orgs = Counter(i.split("/")[1] for i in images if i.count("/") >= 2)
    found["org"] = orgs.most_common(1)[0][0] if orgs else None
    if found["gitea"]:
        name, ns, _ = found["gitea"]
        hosts = []
        for ing in cluster.list("Ingress", ns):
            for rule in ing["spec"].get("rules") or []:
                backends = [p.get("backend", {}).get("service", {}).get("name") for p in
                            (rule.get("http") or {}).get("paths") or []]
                if name in backends and rule.get("host"):
                    hosts.append(rule["host"])
        realm = [h for h in hosts if ".k3s." in h] or [h for h in hosts if h.startswith("gitea.")]
        registry = [h for h in hosts if h.startswith("registry.") and ".k3s." not in h]
        found["realm_host"] = realm[0] if realm else None
        found["registry_host"] = registry[0] if registry else None
    found["nodes"] = [n["metadata"]["name"] for n in cluster.list("Node")]
    return found


def render(found: dict, *, context: str | None) -> str:
    g = found["gitea"]
    internal = f"{g[0]}.{g[1]}.svc.cluster.local:{g[2]}" if g else "CHANGE-ME.gitea-system.svc.cluster.local:3000"
    realm = found["realm_host"] or "CHANGE-ME.example.com"
    registry = found["registry_host"] or "CHANGE-ME.example.com"
    org = found["org"] or "CHANGE-ME"
    lines = [
        "# ghcr2gitea migration plan — written by `ghcr2gitea init` from the cluster"
        + (f" (context {context})" if context else "") + ".",
        "# Check every value; CHANGE-ME marks what the cluster could not tell. The token is never here:",
        "# it comes from GITEA_TOKEN or --token-file. Format: docs/plan.md.",
        "version: 1",
        "cluster:",
        f"  context: {context}" if context else "  # context: my-cluster   # default: the kubeconfig's current context",
        "gitea:",
        f"  internal_service: {internal}   # Gitea's HTTP service, as pods reach it",
        f"  root_url: https://{realm}/   # Gitea's ROOT_URL: the auth realm every client must reach over HTTPS",
        "  username: registry-user   # the Gitea user the token belongs to",
        f"  org: {org}",
        "registry:",
        f"  host: {registry}   # the external registry host nodes pull from (never a cluster DNS name)",
        "  legacy_hosts: []   # older registry names manifests may still use",
        "  # ca_file: /path/to/ca.crt   # CA this machine uses to verify the registry host",
        "images:   # GHCR image -> Gitea image (tags and digests are kept)",
    ]
    for img in found["images"] or ["ghcr.io/CHANGE-ME/CHANGE-ME"]:
        name = img.rsplit("/", 1)[-1]
        lines += [f"  - source: {img}", f"    target: {registry}/{org}/{name}"]
    lines += [
        "proxy:",
        f"  coredns_ip: {found['coredns_ip']}   # kube-dns ClusterIP (discovered), the auth proxy's resolver"
        if found["coredns_ip"] else "  # coredns_ip: 10.43.0.10   # discovered from kube-dns when left out",
        "# Object names default to the guide's (secrets.push: gitea-registry-push, secrets.pull:",
        "# gitea-registry-secret, proxy.name: gitea-auth-proxy, ingress.name: gitea-k3s-alias-tls, …).",
        f"# Nodes found: {', '.join(found['nodes'])}",
    ]
    return "\n".join(lines) + "\n"
