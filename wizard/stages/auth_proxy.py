"""Stage TLS auth proxy [Step 3]: nginx in front of Gitea's token endpoint with its own certificate, and the proof it answers."""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

from ..certs import cert_facts, make_proxy_cert
from ..diagnose import BY_KEY
from ..script import Script
from .base import Check, Context, StageFailed, failed, passed, skipped
from .objects import ObjectStage
from .pods import probe_pod, wait_rollout
from .preflight import coredns_ip


def proxy_cert(ctx: Context):
    """The certificate this run makes for the auth proxy (and the realm host it serves), made once."""
    if ctx.cache.proxy_cert is None:
        ctx.cache.proxy_cert = make_proxy_cert(ctx.plan.realm_hostname, ctx.plan.cert_days)
    return ctx.cache.proxy_cert


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
        c = proxy_cert(ctx)
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
            ctx.cache.proxy_cert = None
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
    c = proxy_cert(ctx)
    return base64.b64encode(c.cert_pem).decode(), base64.b64encode(c.key_pem).decode()


def realm_ca_pem(ctx: Context) -> str | None:
    """The certificate nodes must trust for the realm in node_tls: ca mode: the proxy CA ConfigMap's (live), else
    the certificate this run will apply; None when neither exists yet."""
    p = ctx.plan
    cm = ctx.cluster.get("ConfigMap", p.proxy_ca_configmap, p.proxy_namespace)
    ca = ((cm or {}).get("data") or {}).get("ca.crt")
    if ca:
        return ca
    c = ctx.cache.proxy_cert
    return c.cert_pem.decode() if c is not None else None
