"""Stage HTTPS ingress [Step 4]: the registry host served by Traefik's websecure entrypoint."""

from __future__ import annotations

from .. import authflow
from ..diagnose import BY_KEY
from .auth_proxy import realm_cert, realm_cert_secret_needed
from .base import WARN, Check, Context, failed, passed
from .nodes import NODE_TLS_FIX
from .objects import ObjectStage

WEBSECURE = "traefik.ingress.kubernetes.io/router.entrypoints"


def _on_websecure(ingress: dict) -> bool:
    """Served on websecure: no entrypoints annotation (every entrypoint), or one that lists websecure."""
    eps = (ingress["metadata"].get("annotations") or {}).get(WEBSECURE)
    return eps is None or "websecure" in [e.strip() for e in eps.split(",")]


class HttpsIngress(ObjectStage):
    key, title, guide_step = "ingress", "HTTPS ingress", "Step 4"
    description = ("Nodes fetch pull tokens from the realm host through Traefik over HTTPS. The existing Ingress "
                   "is on the web entrypoint only; on websecure without spec.tls K3s's Traefik would answer with "
                   "its default certificate. This stage adds a separate Ingress with spec.tls for the realm host.")

    def targets(self, ctx):
        out = [("Ingress", ctx.plan.ingress_name, ctx.plan.ingress_namespace)]
        if realm_cert_secret_needed(ctx.plan):
            out.insert(0, ("Secret", ctx.plan.proxy_tls_secret, ctx.plan.ingress_namespace))
        return out

    def desired(self, ctx, live):
        p = ctx.plan
        svc = p.internal_service.split(".")[0]
        port = int(p.internal_service.rsplit(":", 1)[1])
        tls: dict = {"hosts": [p.realm_hostname]}
        objs = []
        if p.node_tls == "ca":
            # nodes that verify (registry.node_tls: ca) need the realm to present a certificate that names it
            # and that their CA bundle trusts: the auth proxy's (Traefik reads Secrets of the Ingress's namespace)
            tls["secretName"] = p.proxy_tls_secret
            if realm_cert_secret_needed(p):
                crt, key = realm_cert(ctx)
                objs.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                             "metadata": {"name": p.proxy_tls_secret, "namespace": p.ingress_namespace},
                             "data": {"tls.crt": crt, "tls.key": key}})
        return objs + [{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                 "metadata": {"name": p.ingress_name, "namespace": p.ingress_namespace,
                              "annotations": {WEBSECURE: "websecure",
                                              "traefik.ingress.kubernetes.io/router.tls": "true"}},
                 "spec": {"tls": [tls],
                          "rules": [{"host": p.realm_hostname, "http": {"paths": [{
                              "path": "/", "pathType": "Prefix",
                              "backend": {"service": {"name": svc, "port": {"number": port}}}}]}}]}}]

    def verify(self, ctx: Context) -> list[Check]:
        p = ctx.plan
        checks = []
        ings = ctx.cluster.list("Ingress", None)
        for_host = [i for i in ings if any(r.get("host") == p.realm_hostname for r in i["spec"].get("rules") or [])]
        traps = [i for i in for_host if _on_websecure(i) and not i["spec"].get("tls")]
        tls = [i for i in for_host if i["spec"].get("tls")]
        if traps and not tls:
            d = BY_KEY["websecure-without-tls"]
            checks.append(failed("TLS Ingress for the realm host", d.cause, d.fix,
                                 {"ingresses": [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in traps],
                                  "diagnosis": d.key}))
        elif not tls:
            d = BY_KEY["token-endpoint-404"]
            checks.append(failed("TLS Ingress for the realm host", f"no Ingress with spec.tls for {p.realm_hostname}: "
                                 + d.cause, d.fix, {"diagnosis": d.key}))
        else:
            checks.append(passed("TLS Ingress for the realm host",
                                 {"ingresses": [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in tls]}))
        flow = authflow.operator_flows(ctx, "realm")["realm"]
        ev = flow.evidence()
        if flow.problem and traps and not tls:
            # the realm's failure is the websecure trap found above (Traefik's default certificate)
            d = BY_KEY["websecure-without-tls"]
            checks.append(failed("realm answers a token over HTTPS", f"{flow.cause}: {d.cause}", d.fix,
                                 {**ev, "diagnosis": d.key}))
        elif flow.problem:
            cause, fix = flow.explain()
            checks.append(failed("realm answers a token over HTTPS", cause, fix, ev))
        else:
            checks.append(passed("realm answers a token over HTTPS", ev))
            tls = next((t for hp, t in (ev.get("tls") or {}).items() if hp.split(":")[0] == p.realm_hostname), None)
            if tls and tls.get("verdict") == "verifies only with verification off":
                # it works only because nothing checks it: say so, and name the safer mode
                leaf = (tls.get("chain") or [{}])[0]
                what = leaf.get("subject") or "its certificate"
                checks.append(Check("the realm's certificate can be verified", WARN,
                                    f"{p.realm_hostname} presents {what} (SANs {', '.join(leaf.get('sans') or [])}"
                                    "), which no client can verify: nodes accept it only because "
                                    "registry.node_tls is skip_verify", NODE_TLS_FIX,
                                    {**ev, "safer": "registry.node_tls: ca"}, gating=False))
        return checks
