"""What the node stages share: node facts (read once per run), scripts on nodes, the node Secret, the CA bundle."""

from __future__ import annotations

from .. import ownership as O
from .. import registries as R
from ..nodeexec import NodeExec
from .base import Check, Context, StageFailed, failed
from .preflight import discover_nodes

SECRET_NAME = "ghcr2gitea-node-registries"


def secret_ref(ctx_or_plan) -> O.Ref:
    plan = getattr(ctx_or_plan, "plan", ctx_or_plan)
    return O.Ref("Secret", plan.wizard_namespace, SECRET_NAME)


def remove_node_secret(cluster, namespace: str) -> str:
    """Delete the merged-files Secret (it carries the token) when it is the wizard's: "removed", "absent", or
    "left alone" (another owner's object of that name is never deleted)."""
    live = cluster.get("Secret", SECRET_NAME, namespace)
    if live is None:
        return "absent"
    if not O.owned(live):
        return "left alone"
    return "removed" if cluster.delete("Secret", SECRET_NAME, namespace) else "absent"


def node_exec(ctx: Context) -> NodeExec:
    return NodeExec(ctx.cluster, namespace=ctx.plan.wizard_namespace, image=ctx.plan.helper_image)


def node_facts(ctx: Context, *, fresh: bool = False) -> dict[str, R.NodeFacts]:
    """registries.yaml, k3s unit and loaded containerd config of every node (one probe pod each)."""
    if ctx.cache.node_facts is not None and not fresh:
        return ctx.cache.node_facts
    found = discover_nodes(ctx)
    nodes = [n.name for n in found]
    versions = {n.name: n.kubelet for n in found}  # what k3s generates from registries.yaml depends on it
    script = R.facts_script(ctx.plan, R.TokenCheck.of(ctx.token) if ctx.token is not None else None)
    results = node_exec(ctx).run_many({n: script for n in nodes}, stage="registries", purpose="facts",
                                      timeout=ctx.node_timeout)
    facts = {}
    for n, res in results.items():
        if not res.ok:
            raise StageFailed(failed("node facts read", f"{n}: the probe pod {res.phase.lower()}"
                                     f"{'' if res.exit_code is None else f' (exit {res.exit_code})'}: "
                                     f"{res.output.strip()[-200:] or 'no output'}",
                                     f"check that privileged pods can run on {n} in namespace "
                                     f"{ctx.plan.wizard_namespace}"))
        facts[n] = R.parse_facts(n, res.output, ctx.plan, versions.get(n, ""))
    ctx.cache.node_facts = facts
    return facts


def compare_on_nodes(ctx: Context, asks: dict[str, list[tuple[int, str]]], *, stage: str) -> dict[str, dict]:
    """Per node, per 1-based line: does that line's credential value equal the given value? (node-side)"""
    if not asks:
        return {}
    import secrets as _secrets
    salt = _secrets.token_hex(16)
    results = node_exec(ctx).run_many({n: R.compare_script(a, salt) for n, a in asks.items()}, stage=stage,
                                      purpose="compare", timeout=ctx.node_timeout)
    out = {}
    for n, res in results.items():
        if not res.ok:
            raise StageFailed(failed("node registries.yaml compared", f"{n}: the probe pod {res.phase.lower()}"
                                     f"{'' if res.exit_code is None else f' (exit {res.exit_code})'}",
                                     f"check that privileged pods can run on {n} in namespace "
                                     f"{ctx.plan.wizard_namespace}"))
        out[n] = R.parse_compare(res.output, asks[n])
    return out


def ca_bundle(ctx: Context) -> str | None:
    """node_tls: ca — the text of the CA bundle every node gets (R.bundle_text), or None in skip_verify mode.

    StageFailed when it cannot be made: registry.ca_file without a certificate, or no realm certificate yet."""
    p = ctx.plan
    if p.node_tls != "ca":
        return None
    from pathlib import Path

    from .auth_proxy import realm_ca_pem
    try:
        registry_ca = Path(p.registry_ca_file).read_text(errors="replace")
    except OSError as e:
        raise StageFailed(failed("CA bundle for the nodes", f"registry.ca_file {p.registry_ca_file}: {e.strerror}",
                                 "point registry.ca_file at the PEM file of the registry host's CA")) from None
    if not R.pem_blocks(registry_ca):
        raise StageFailed(failed("CA bundle for the nodes", f"registry.ca_file {p.registry_ca_file}: no PEM "
                                 "certificate in it", "point registry.ca_file at the PEM file of the registry "
                                 "host's CA"))
    realm = realm_ca_pem(ctx)
    if not realm:
        raise StageFailed(failed("CA bundle for the nodes", f"no realm certificate yet (ConfigMap "
                                 f"{p.proxy_namespace}/{p.proxy_ca_configmap} is missing)",
                                 "apply stage TLS auth proxy first"))
    return R.bundle_text(registry_ca, realm)


NODE_TLS_FIX = ("set registry.node_tls: ca in the plan: every node then gets a CA bundle (registry.ca_file and the "
                "realm's certificate) and verifies the registry host and the realm")


def unrestartable(facts: dict[str, R.NodeFacts]) -> Check | None:
    """A failing check naming the nodes without a systemd k3s unit (OpenRC, or none found), or None."""
    bad = {n: f for n, f in facts.items() if f.unit is None}
    if not bad:
        return None
    openrc = [n for n, f in bad.items() if f.openrc]
    why = ("runs OpenRC (/etc/init.d/k3s*, no systemctl)" if len(openrc) == len(bad) else
           "has no systemd unit k3s or k3s-agent" + (f" ({', '.join(openrc)}: OpenRC)" if openrc else ""))
    return failed("k3s restartable on every node",
                  f"{', '.join(sorted(bad))} {why}: the wizard restarts k3s only with systemctl and proves the "
                  "restart from systemd's timestamps, so it cannot restart such a node; nothing was written to any node",
                  "run the wizard on a cluster whose nodes run k3s under systemd, or write registries.yaml and "
                  "restart k3s on that node by hand (rc-service k3s restart, or k3s-agent on an agent)",
                  {"nodes": sorted(bad), "openrc": openrc})
