"""TLS auth proxy [Step 3] and HTTPS ingress [Step 4]: the two ways clients reach the realm."""

from __future__ import annotations

import base64
import shlex
import time
from urllib.parse import urlsplit

from .. import authflow
from ..certs import cert_facts, make_proxy_cert
from ..diagnose import BY_KEY
from ..nodeexec import ROLE_LABEL, RUN_LABEL
from ..script import Script
from .base import WARN, Check, Context, StageFailed, failed, passed, skipped
from .nodes import NODE_TLS_FIX
from .objects import ObjectStage
from .preflight import coredns_ip

PROBE_IMAGE = "curlimages/curl:8.10.1"
WEBSECURE = "traefik.ingress.kubernetes.io/router.entrypoints"


def nginx_conf(resolver: str, upstream: str) -> str:
    # resolver + a variable in proxy_pass: nginx resolves per request, so a DNS hiccup at pod
    # start cannot keep it down ("host not found in upstream" in the guide's troubleshooting).
    return f"""server {{
  listen 443 ssl;
  ssl_certificate /etc/nginx/tls/tls.crt;
  ssl_certificate_key /etc/nginx/tls/tls.key;

  # CoreDNS (kube-dns ClusterIP, discovered by ghcr2gitea)
  resolver {resolver} valid=30s;

  location / {{
    set $upstream http://{upstream};
    proxy_pass $upstream;
    proxy_set_header Host $http_host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_buffering off;
    client_max_body_size 0;
  }}
}}
"""


def proxy_ports(plan) -> list[dict]:
    """443, and the realm's own port when ROOT_URL names one: Kaniko connects to the realm's port."""
    ports = [{"name": "https", "port": 443, "targetPort": 443, "protocol": "TCP"}]
    port = urlsplit(plan.root_url).port
    if port and port != 443:
        ports.append({"name": "realm", "port": port, "targetPort": 443, "protocol": "TCP"})
    return ports


class AuthProxy(ObjectStage):
    key, title, guide_step = "proxy", "TLS auth proxy", "Step 3"
    description = ("Kaniko runs in a pod and must fetch tokens from the realm host over HTTPS with a certificate it "
                   "trusts. This stage makes a self-signed certificate for the realm host (the key never touches "
                   "the disk), stores it as a TLS Secret and a CA ConfigMap, and runs nginx in front of Gitea's "
                   "service with CoreDNS as its resolver.")

    def targets(self, ctx):
        p = ctx.plan
        ns = p.proxy_namespace
        return [("Secret", p.proxy_tls_secret, ns), ("ConfigMap", p.proxy_ca_configmap, ns),
                ("ConfigMap", p.proxy_config_configmap, ns), ("Deployment", p.proxy_name, ns),
                ("Service", p.proxy_name, ns)]

    def _cert(self, ctx, live) -> tuple[str, str]:
        """Keep a good existing certificate (idempotent re-runs); make one when missing, wrong or expiring."""
        p = ctx.plan
        sec = live.get(f"Secret {p.proxy_namespace}/{p.proxy_tls_secret}")
        ca = live.get(f"ConfigMap {p.proxy_namespace}/{p.proxy_ca_configmap}")
        if sec and ca:
            crt = base64.b64decode((sec.get("data") or {}).get("tls.crt", ""))
            facts = cert_facts(crt)
            if facts and facts.problem(p.realm_hostname) is None and (ca.get("data") or {}).get("ca.crt") == \
                    crt.decode():
                return sec["data"]["tls.crt"], sec["data"]["tls.key"]
        if "proxy_cert" not in ctx.cache:
            ctx.cache["proxy_cert"] = make_proxy_cert(p.realm_hostname, p.cert_days)
        c = ctx.cache["proxy_cert"]
        return base64.b64encode(c.cert_pem).decode(), base64.b64encode(c.key_pem).decode()

    def desired(self, ctx, live):
        p = ctx.plan
        ns, name = p.proxy_namespace, p.proxy_name
        crt, key = self._cert(ctx, live)
        labels = {"app": name}
        resolver = coredns_ip(ctx)
        if not resolver:
            raise StageFailed(failed("CoreDNS address", "kube-system/kube-dns has no ClusterIP",
                                     "set proxy.coredns_ip in the plan"))
        return [
            {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
             "metadata": {"name": p.proxy_tls_secret, "namespace": ns}, "data": {"tls.crt": crt, "tls.key": key}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": p.proxy_ca_configmap, "namespace": ns},
             "data": {"ca.crt": base64.b64decode(crt).decode()}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": p.proxy_config_configmap, "namespace": ns},
             "data": {"default.conf": nginx_conf(resolver, p.internal_service)}},
            {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
             "spec": {"replicas": 1, "selector": {"matchLabels": dict(labels)}, "template": {
                 "metadata": {"labels": dict(labels)},
                 "spec": {"containers": [{
                     "name": "nginx", "image": p.proxy_image, "ports": [{"containerPort": 443}],
                     "volumeMounts": [
                         {"name": "config", "mountPath": "/etc/nginx/conf.d/default.conf", "subPath": "default.conf"},
                         {"name": "tls", "mountPath": "/etc/nginx/tls", "readOnly": True}],
                     "resources": {"requests": {"memory": "16Mi", "cpu": "10m"},
                                   "limits": {"memory": "64Mi", "cpu": "50m"}}}],
                     "volumes": [{"name": "config", "configMap": {"name": p.proxy_config_configmap}},
                                 {"name": "tls", "secret": {"secretName": p.proxy_tls_secret}}]}}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
             "spec": {"type": "ClusterIP", "selector": dict(labels), "ports": proxy_ports(p)}},
        ]

    def apply(self, ctx: Context, changes) -> None:
        super().apply(ctx, changes)
        if changes:
            ctx.cache.pop("proxy_cert", None)
            wait_rollout(ctx, "Deployment", ctx.plan.proxy_name, ctx.plan.proxy_namespace, self.key)

    def verify(self, ctx: Context) -> list[Check]:
        p = ctx.plan
        ns = p.proxy_namespace
        checks = []
        sec = ctx.cluster.get("Secret", p.proxy_tls_secret, ns)
        ca = ctx.cluster.get("ConfigMap", p.proxy_ca_configmap, ns)
        facts = cert_facts(base64.b64decode((sec or {}).get("data", {}).get("tls.crt", ""))) if sec else None
        if facts is None:
            checks.append(failed("proxy certificate", f"TLS secret {ns}/{p.proxy_tls_secret} missing or unreadable",
                                 "apply stage TLS auth proxy"))
        elif (problem := facts.problem(p.realm_hostname)) is not None:
            checks.append(failed("proxy certificate", problem, "apply stage TLS auth proxy (it makes a new one)",
                                 {"dns_names": facts.dns_names, "not_after": f"{facts.not_after:%Y-%m-%d}"}))
        else:
            checks.append(passed("proxy certificate", {"dns_names": facts.dns_names,
                                                       "not_after": f"{facts.not_after:%Y-%m-%d}"}))
        if sec and ca and (ca.get("data") or {}).get("ca.crt", "").strip() != base64.b64decode(
                sec["data"].get("tls.crt", "")).decode().strip():
            checks.append(failed("CA ConfigMap matches the certificate", f"{ns}/{p.proxy_ca_configmap} holds another "
                                 "certificate, so Kaniko would not trust the proxy", "apply stage TLS auth proxy"))
        elif ca is None:
            checks.append(failed("CA ConfigMap matches the certificate", f"{ns}/{p.proxy_ca_configmap} missing",
                                 "apply stage TLS auth proxy"))
        else:
            checks.append(passed("CA ConfigMap matches the certificate"))
        cm = ctx.cluster.get("ConfigMap", p.proxy_config_configmap, ns)
        conf = (cm or {}).get("data", {}).get("default.conf", "")
        dns = coredns_ip(ctx)
        if not conf:
            checks.append(failed("nginx resolves Gitea at request time", "nginx config missing",
                                 "apply stage TLS auth proxy"))
        elif "$upstream" not in conf or f"resolver {dns}" not in conf:
            d = BY_KEY["nginx-upstream"] if "resolver" not in conf else BY_KEY["nginx-resolver"]
            checks.append(failed("nginx resolves Gitea at request time", d.cause, d.fix))
        else:
            checks.append(passed("nginx resolves Gitea at request time", {"resolver": dns}))
        dep = ctx.cluster.get("Deployment", p.proxy_name, ns)
        ready = (dep or {}).get("status", {}).get("readyReplicas", 0)
        checks.append(passed("proxy running", {"readyReplicas": ready}) if dep and ready else
                      failed("proxy running", f"deployment {ns}/{p.proxy_name} "
                             f"{'missing' if dep is None else 'has no ready replica'}",
                             "apply stage TLS auth proxy; if it crash-loops, read its log (kubectl logs deploy/"
                             f"{p.proxy_name})"))
        svc = ctx.cluster.get("Service", p.proxy_name, ns)
        if svc is None:
            checks.append(failed("Gitea answers through the proxy", f"service {ns}/{p.proxy_name} missing",
                                 "apply stage TLS auth proxy"))
        elif ctx.audit and not ctx.node_probes:
            checks.append(skipped("Gitea answers through the proxy", "needs a probe pod",
                                  "run audit with --node-probes"))
        else:
            checks.append(probe_through_proxy(ctx, svc["spec"]["clusterIP"]))
        return checks


def probe_pod(ctx: Context, name: str, script: str, *, namespace: str, extra_spec: dict | None = None,
              purpose: str = "probe", timeout: float = 60) -> tuple[str, str]:
    """Run a short curl script in a plain pod (cluster network view); return (phase, log); the pod is deleted."""
    import secrets as _s
    run = _s.token_hex(3)
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"ghcr2gitea-{name}-{run}", "namespace": namespace,
                        "labels": {ROLE_LABEL: purpose, RUN_LABEL: run}},
           "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "probe", "image": PROBE_IMAGE, "command": ["sh", "-c", script]}],
                    **(extra_spec or {})}}
    if extra_spec and "containers" in extra_spec:
        pod["spec"]["containers"] = extra_spec["containers"]
    cluster = ctx.cluster
    cluster.create(pod, "verify")
    name_ = pod["metadata"]["name"]
    try:
        deadline = time.monotonic() + timeout
        phase = "Pending"
        while time.monotonic() < deadline:
            cur = cluster.get("Pod", name_, namespace)
            phase = (cur or {}).get("status", {}).get("phase", "Pending")
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(0.05)
        log = cluster.pod_log(name_, namespace, "probe") if phase in ("Succeeded", "Failed") else ""
        return phase, log
    finally:
        cluster.delete("Pod", name_, namespace)


def proxy_probe_script(ip: str) -> str:
    """GET /v2/ on the proxy's ClusterIP (read from the cluster: untrusted, so quoted like any value)."""
    host = f"[{ip}]" if ":" in ip else ip
    return Script().add("curl -sk -o /dev/null -w {fmt} {url}", fmt="%{http_code}", url=f"https://{host}/v2/").text()


def probe_through_proxy(ctx: Context, ip: str) -> Check:
    phase, log = probe_pod(ctx, "proxy-probe", proxy_probe_script(ip), namespace=ctx.plan.proxy_namespace)
    code = log.strip()[-3:]
    if code == "401":
        return passed("Gitea answers through the proxy", {"request": f"GET https://{ip}/v2/", "status": 401})
    return failed("Gitea answers through the proxy", f"GET https://{ip}/v2/ from a pod gave "
                  f"{code or 'no answer'} (want 401 from Gitea)",
                  "check the proxy's log (kubectl logs deploy/" + ctx.plan.proxy_name + ") and its resolver",
                  {"phase": phase, "log": log[-500:]})


def wait_rollout(ctx: Context, kind: str, name: str, namespace: str, stage: str, timeout: float = 120) -> None:
    """Until observedGeneration caught up and every replica is updated and ready; else StageFailed."""
    deadline = time.monotonic() + timeout
    while True:
        obj = ctx.cluster.get(kind, name, namespace) or {}
        st, spec = obj.get("status") or {}, obj.get("spec") or {}
        want = spec.get("replicas", 1)
        if (st.get("observedGeneration", 0) >= obj.get("metadata", {}).get("generation", 1)
                and st.get("updatedReplicas", 0) >= want and st.get("readyReplicas", 0) >= want
                and st.get("replicas", 0) <= want):
            return
        if time.monotonic() > deadline:
            raise StageFailed(failed(f"{kind} {namespace}/{name} rolled out",
                                     f"not ready after {timeout:.0f} s (ready {st.get('readyReplicas', 0)}/{want})"
                                     + pull_failure_hint(ctx, namespace, obj),
                                     f"kubectl -n {namespace} describe {kind.lower()} {name}; fix, then re-run"))
        ctx.say(stage, f"waiting for {kind} {namespace}/{name} ({st.get('readyReplicas', 0)}/{want} ready)")
        time.sleep(0.1)


def pull_failure_hint(ctx: Context, namespace: str, owner: dict) -> str:
    """The newest image pull failure of the owner's pods, explained by the catalogue."""
    from ..diagnose import classify
    sel = ",".join(f"{k}={v}" for k, v in ((owner.get("spec") or {}).get("selector") or {})
                   .get("matchLabels", {}).items())
    if not sel:
        return ""
    from ..cluster import ApiError
    try:
        pods = ctx.cluster.list("Pod", namespace, labels=sel)
    except ApiError as e:  # an in-cluster audit may not read pods (its RBAC): the hint is extra, the finding stands
        if e.status != 403:
            raise
        return f"; its pods' pull errors are not readable here ({e.forbidden})"
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            w = (cs.get("state") or {}).get("waiting") or {}
            if w.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                d = classify(w.get("message", ""))
                return f"; {pod['metadata']['name']}: {w['reason']}" + (f" — {d.cause}" if d else "")
    return ""


def realm_cert_secret_needed(plan) -> bool:
    """node_tls: ca with the Ingress in another namespace than the proxy: Traefik needs a copy of its cert."""
    return plan.node_tls == "ca" and plan.ingress_namespace != plan.proxy_namespace


def realm_cert(ctx: Context) -> tuple[str, str]:
    """(tls.crt, tls.key) base64, of the auth proxy's certificate: live, else the one this run will apply."""
    p = ctx.plan
    sec = ctx.cluster.get("Secret", p.proxy_tls_secret, p.proxy_namespace)
    data = (sec or {}).get("data") or {}
    if data.get("tls.crt") and data.get("tls.key"):
        return data["tls.crt"], data["tls.key"]
    if "proxy_cert" not in ctx.cache:
        ctx.cache["proxy_cert"] = make_proxy_cert(p.realm_hostname, p.cert_days)
    c = ctx.cache["proxy_cert"]
    return base64.b64encode(c.cert_pem).decode(), base64.b64encode(c.key_pem).decode()


def realm_ca_pem(ctx: Context) -> str | None:
    """The certificate nodes must trust for the realm in node_tls: ca mode: the proxy CA ConfigMap's (live), else
    the certificate this run will apply; None when neither exists yet."""
    p = ctx.plan
    cm = ctx.cluster.get("ConfigMap", p.proxy_ca_configmap, p.proxy_namespace)
    ca = ((cm or {}).get("data") or {}).get("ca.crt")
    if ca:
        return ca
    c = ctx.cache.get("proxy_cert")
    return c.cert_pem.decode() if c is not None else None


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


__all__ = ["AuthProxy", "HttpsIngress", "probe_pod", "wait_rollout", "shlex"]
