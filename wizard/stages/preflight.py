"""Preflight: is this the cluster we think, and does it have what the migration needs?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..kube import NodeInfo
from ..plan import ip_problem
from .base import Check, Context, Observation, Stage, failed, passed, skipped


def discover_nodes(ctx: Context) -> list[NodeInfo]:
    if ctx.cache.nodes is None:
        ctx.cache.nodes = sorted((NodeInfo.from_node(n) for n in ctx.cluster.list("Node")),
                                 key=lambda n: (n.role != "server", n.name))
    return ctx.cache.nodes


def coredns_ip(ctx: Context) -> str | None:
    """kube-dns's ClusterIP (the guide hard-codes 10.43.0.10; clusters differ)."""
    if ctx.plan.coredns_ip:
        return ctx.plan.coredns_ip
    if not ctx.cache.coredns_read:
        svc = ctx.cluster.get("Service", "kube-dns", "kube-system")
        ip = (svc or {}).get("spec", {}).get("clusterIP")
        # it goes into nginx's config: only an IP address, never other text read from the cluster
        ctx.cache.coredns_ip = ip if isinstance(ip, str) and ip_problem(ip) is None else None
        ctx.cache.coredns_read = True
    return ctx.cache.coredns_ip


@dataclass(frozen=True)
class PreflightSeen(Observation):
    """The cluster as Preflight reads it (a field None: that object is absent)."""

    version: Any  # the API server's /version (a dict) or its gitVersion
    nodes: list[NodeInfo]
    gitea_service: dict | None
    gitea_service_name: str  # "namespace/name", also when absent
    traefik: dict | None
    coredns_ip: str | None


class Preflight(Stage):
    key, title, guide_step = "preflight", "Preflight", "Prerequisites"
    description = ("Reads the cluster the kubeconfig points at: API version, nodes and their roles (servers run the "
                   "k3s unit, agents k3s-agent), Gitea's internal service, Traefik, and the CoreDNS address the auth "
                   "proxy will use as its resolver. Nothing is changed.")

    def inspect(self, ctx: Context) -> PreflightSeen:
        plan = ctx.plan
        svc_name, _, rest = plan.internal_service.partition(".")
        svc_ns = rest.split(".")[0] if rest else plan.ingress_namespace
        return PreflightSeen(
            version=ctx.cluster.server_version(),
            nodes=discover_nodes(ctx),
            gitea_service=ctx.cluster.get("Service", svc_name, svc_ns),
            gitea_service_name=f"{svc_ns}/{svc_name}",
            traefik=ctx.cluster.get("Service", "traefik", "kube-system"),
            coredns_ip=coredns_ip(ctx),
        )

    def verify(self, ctx: Context) -> list[Check]:
        o = self.inspect(ctx)
        checks = [passed("cluster reachable", {"server": ctx.cluster.server, "version": o.version})]
        nodes: list[NodeInfo] = o.nodes
        servers = [n.name for n in nodes if n.role == "server"]
        agents = [n.name for n in nodes if n.role == "agent"]
        if not nodes:
            checks.append(failed("nodes discovered", "the cluster lists no nodes", "check the kubeconfig context"))
        else:
            checks.append(passed("nodes discovered", {"servers": servers, "agents": agents},
                                 f"{len(servers)} server(s), {len(agents)} agent(s)"))
        not_ready = [f"{n.name} ({n.ready})" for n in nodes if n.ready != "True"]
        checks.append(failed("all nodes Ready", f"not Ready: {', '.join(not_ready)}",
                             "bring those nodes back (kubectl describe node NAME) before changing node config")
                      if not_ready else passed("all nodes Ready", {"ready": len(nodes)}))
        if len(servers) % 2 == 0 and servers:
            checks.append(Check("etcd quorum headroom", "warn",
                                f"{len(servers)} servers: an even count tolerates no more failures than one fewer",
                                "restarts go one server at a time regardless", gating=False))
        svc = o.gitea_service
        port = int(ctx.plan.internal_service.rsplit(":", 1)[1])
        if svc is None:
            checks.append(failed("Gitea service found", f"service {o['gitea_service_name']} does not exist",
                                 "set gitea.internal_service to Gitea's HTTP service (NAME.NAMESPACE.svc.cluster."
                                 "local:PORT)"))
        elif port not in [p.get("port") for p in svc["spec"].get("ports") or []]:
            checks.append(failed("Gitea service found", f"service {o['gitea_service_name']} has no port {port}",
                                 "fix the port in gitea.internal_service",
                                 {"ports": [p.get("port") for p in svc["spec"].get("ports") or []]}))
        else:
            checks.append(passed("Gitea service found", {"service": o.gitea_service_name,
                                                         "clusterIP": svc["spec"].get("clusterIP"), "port": port}))
        tr = o.traefik
        if tr is None:
            checks.append(failed("Traefik present", "kube-system/traefik service not found",
                                 "the HTTPS realm needs K3s's Traefik ingress controller (or adapt the Ingress stage)"))
        else:
            lb = [i.get("ip") or i.get("hostname") for i in (tr.get("status", {}).get("loadBalancer") or {})
                  .get("ingress") or []]
            checks.append(passed("Traefik present", {"type": tr["spec"].get("type"), "loadBalancer": lb}))
        ip = o.coredns_ip
        checks.append(passed("CoreDNS address discovered", {"kube-dns": ip}) if ip else
                      failed("CoreDNS address discovered", "kube-system/kube-dns has no ClusterIP",
                             "set proxy.coredns_ip in the plan to the cluster DNS service IP"))
        if ctx.audit and not ctx.node_probes:
            checks.append(skipped("node registries state", "reading node files needs probe pods",
                                  "run audit with --node-probes to include per-node facts"))
        return checks
