"""The guide's failure modes, each with a one-line cause and a one-line fix, in one table.

Every row of the guide's Troubleshooting section and of "Things That (Don't) Work" is an
entry; ``classify`` maps an observed error text (a kubelet pull event, crictl output, a
probe hop) to the entry that explains it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    key: str
    title: str
    symptom: str
    cause: str
    fix: str
    pattern: str = ""  # regex over the error text; empty: detected by a stage's own check

    def matches(self, text: str) -> bool:
        return bool(self.pattern) and re.search(self.pattern, text, re.IGNORECASE) is not None


CATALOGUE: tuple[Diagnosis, ...] = (
    Diagnosis("traefik-default-cert", "x509: certificate is valid for …traefik.default",
              "ImagePullBackOff with `x509: certificate is valid for …traefik.default, not <realm host>`",
              "containerd verified the realm's Traefik default certificate: registries.yaml is missing on the node "
              "or k3s has not been restarted since it was written",
              "write registries.yaml with insecure_skip_verify (or the CA) for the registry host, then restart k3s on "
              "the node (stages Node registries and Rolling restart)",
              r"traefik\.default"),
    Diagnosis("token-endpoint-404", "404 Not Found on the token endpoint",
              "`unexpected status from GET request to https://<realm>/v2/token: 404 Not Found`",
              "Traefik has no HTTPS route for the realm host: the HTTP-only Ingress is ignored on websecure",
              "create the separate Ingress with spec.tls and the websecure entrypoint (stage HTTPS ingress)",
              r"v2/token[^\n]*404|404 Not Found[^\n]*token"),
    Diagnosis("unknown-authority", "x509: certificate signed by unknown authority",
              "`x509: certificate signed by unknown authority` on the registry or the realm",
              "the node does not trust the registry's certificate, and containerd fetches the realm token with the "
              "REGISTRY host's TLS settings",
              "set insecure_skip_verify (or ca_file with both certificates) on the registry host's entry in "
              "registries.yaml and restart k3s",
              r"signed by unknown authority"),
    Diagnosis("push-401", "401 Unauthorized during push",
              "Kaniko: `error checking push permissions: 401 Unauthorized`",
              "the token in the push secret is invalid, expired, or lacks write access to the organisation",
              "create a token with package write access in Gitea, then re-run stages Credentials and Registry secrets",
              r"push permissions|denied: requested access"),
    Diagnosis("wrong-token", "401 Unauthorized from the token endpoint",
              "`failed to fetch oauth token: unexpected status: 401 Unauthorized`",
              "Gitea rejected the username/token pair (wrong, revoked or expired token)",
              "create a new access token in Gitea (Settings → Applications) and run the wizard with it "
              "(GITEA_TOKEN or --token-file)",
              r"oauth token[^\n]*401|401 Unauthorized|invalid username or password|unauthorized"),
    Diagnosis("cluster-dns-on-node", "DNS lookup of a cluster name from the node",
              "`lookup gitea-http.gitea-system.svc.cluster.local: no such host` / `Try again`",
              "a *.svc.cluster.local name is used where containerd (on the host, outside the cluster) must resolve it",
              "never use cluster DNS in registries.yaml or image references for pods; use the external registry host",
              r"svc\.cluster\.local[^\n]*(no such host|Try again)|lookup [^ ]*\.svc\.cluster\.local"),
    Diagnosis("nginx-upstream", "nginx: host not found in upstream",
              "the auth proxy pod crash-loops with `[emerg] host not found in upstream`",
              "nginx resolves a literal proxy_pass host once at startup and refuses to start if DNS is not ready",
              "use `resolver <kube-dns ClusterIP>` with `set $upstream …; proxy_pass $upstream;` (stage TLS auth "
              "proxy writes it so)",
              r"host not found in upstream"),
    Diagnosis("nginx-resolver", "nginx resolver cannot resolve the Gitea service",
              "502 from the auth proxy, `could not be resolved` in its log",
              "the nginx `resolver` is not the cluster's DNS (kube-dns), so the service name does not resolve",
              "set the resolver to kube-dns's ClusterIP (discovered by Preflight, not hard-coded 10.43.0.10)",
              r"could not be resolved"),
    Diagnosis("not-restarted", "registries.yaml written but k3s not restarted",
              "the node has the new registries.yaml but pulls still fail the old way",
              "K3s reads registries.yaml only when it starts; containerd's config is still the old one",
              "restart k3s (servers) or k3s-agent (agents) on the node, one at a time (stage Rolling restart)"),
    Diagnosis("kaniko-flags", "--insecure-registry / --skip-tls-verify-registry expected to cover the realm",
              "Kaniko fails on the token endpoint despite --insecure-registry or --skip-tls-verify-registry",
              "those flags apply to push/pull requests only, never to the token endpoint's HTTP client",
              "give Kaniko the proxy CA through SSL_CERT_FILE and map the realm host with hostAliases "
              "(the generated workflow does)"),
    Diagnosis("websecure-without-tls", "websecure entrypoint without spec.tls",
              "an Ingress lists web,websecure but HTTPS answers 404",
              "Traefik ignores websecure on an Ingress that has no spec.tls section",
              "use a separate Ingress with spec.tls.hosts and the websecure entrypoint (stage HTTPS ingress)"),
    Diagnosis("realm-unreachable-from-node", "realm host not reachable from a node",
              "`dial tcp …: connect: connection refused` / `no such host` for the realm host during a pull",
              "the node cannot resolve or reach Gitea's ROOT_URL host, where every token is fetched",
              "make the realm host resolve on the nodes (LAN DNS or /etc/hosts) to Traefik's LoadBalancer IP",
              r"(oauth token|v2/token)[^\n]*(no such host|connection refused|i/o timeout)"),
    Diagnosis("anonymous-token", "anonymous token accepted while the credentials are wrong",
              "the token endpoint answers 200 without credentials, so a check without them proves nothing",
              "Gitea hands anonymous (ghost) tokens to callers without credentials unless sign-in is required",
              "check the token with credentials and against an authenticated endpoint (stage Credentials does)"),
    Diagnosis("realm-host-mismatch", "realm host differs from the expected host",
              "the registry's challenge names a realm on another host than the plan's ROOT_URL",
              "Gitea builds the realm from its ROOT_URL setting, which cannot be changed per request",
              "set gitea.root_url in the plan to Gitea's actual ROOT_URL (or change ROOT_URL in app.ini)"),
    Diagnosis("realm-plain-http", "realm over plain HTTP",
              "the challenge realm is http://…",
              "ROOT_URL is http://; containerd and Kaniko fetch tokens over HTTPS from the realm",
              "set Gitea's ROOT_URL to https://… and serve it through the TLS ingress"),
    Diagnosis("socat-proxy", "socat as the auth proxy",
              "alpine/socat cannot resolve the Gitea service FQDN",
              "musl's getaddrinfo in alpine/socat fails on K8s service FQDNs",
              "use the nginx auth proxy with resolver + set $upstream (stage TLS auth proxy)"),
)

BY_KEY = {d.key: d for d in CATALOGUE}


def classify(text: str) -> Diagnosis | None:
    for d in CATALOGUE:
        if d.matches(text):
            return d
    return None


def render_markdown() -> str:
    lines = ["# Troubleshooting", "",
             "Generated from `wizard/diagnose.py`: every failure the wizard recognises, with the cause and the fix "
             "it prints.", ""]
    for d in CATALOGUE:
        lines += [f"## {d.title}", "", f"**Symptom:** {d.symptom}", "", f"**Cause:** {d.cause}", "",
                  f"**Fix:** {d.fix}", ""]
    return "\n".join(lines)
