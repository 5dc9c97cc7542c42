"""The guide's failure modes, each with a one-line cause and a one-line fix, in one table.

Every row of the guide's Troubleshooting section and of both "Things That (Don't) Work" tables
is an entry, and so is every trap the auth-flow probe names (realm host, realm over HTTP,
anonymous tokens, pull-only tokens, certificate names and dates). ``classify`` maps an
observed error text — a kubelet pull event, ``crictl pull`` output, skopeo's or curl's error,
a probe hop — to the entry that explains it; entries without a pattern are detected by a
stage's own check (``detected_by``). The table renders into docs/troubleshooting.md.

Order matters: ``classify`` returns the first entry whose pattern matches, so the specific
entries (Traefik's default certificate, a cluster DNS name) come before the general ones.
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
    detected_by: str = ""
    source: str = ""  # where the guide (or the issue) names it

    def matches(self, text: str) -> bool:
        return bool(self.pattern) and re.search(self.pattern, text, re.IGNORECASE) is not None


TS = "guide: Troubleshooting"
DONT = "guide: Things That Don't Work"
DO = "guide: Things That Do Work"
PROBE = "auth-flow probe"

CATALOGUE: tuple[Diagnosis, ...] = (
    Diagnosis("traefik-default-cert", "x509: certificate is valid for …traefik.default",
              "ImagePullBackOff with `x509: certificate is valid for …traefik.default, not <realm host>`",
              "containerd checked the realm's Traefik default certificate: it fetches the token with the REGISTRY "
              "host's TLS settings, and the node's registries.yaml entry for the registry host neither skips "
              "verification nor trusts the realm's certificate (or k3s was not restarted since it was written)",
              "give the registry host's registries.yaml entry insecure_skip_verify (or a ca_file holding the realm's "
              "certificate too), then restart k3s on the node (stages Node registries and Rolling restart)",
              r"traefik\.default", "Verify: containerd's view and the pull test on each node", TS),
    Diagnosis("cluster-dns-on-node", "DNS lookup of a cluster name from the node",
              "`lookup gitea-http.gitea-system.svc.cluster.local: no such host` / `Try again`",
              "a *.svc.cluster.local name is used where containerd (on the host, outside the cluster) must resolve it",
              "never use cluster DNS in registries.yaml or in image references pods pull; use the external registry "
              "host",
              r"svc\.cluster\.local[^\n]*(no such host|Try again)|lookup [^ ]*\.svc\.cluster\.local",
              "Node registries (the file) and Verify (containerd's view)", TS + "; " + DONT),
    Diagnosis("realm-unreachable-from-node", "realm host not reachable from a node",
              "`failed to fetch oauth token: … dial tcp …: connect: connection refused` / `no such host` during a pull",
              "the node cannot resolve or reach Gitea's ROOT_URL host, where every pull token is fetched",
              "make the realm host resolve on the nodes (LAN DNS or /etc/hosts) to Traefik's LoadBalancer IP and "
              "open port 443 to it",
              r"(oauth token|anonymous token|v2/token)[^\n]*(no such host|connection refused|i/o timeout|"
              r"deadline exceeded)", "Verify: containerd's view and the pull test on each node", PROBE),
    Diagnosis("cert-expired", "certificate expired",
              "`x509: certificate has expired or is not yet valid` / curl `SSL certificate problem: certificate has "
              "expired`",
              "the certificate the host presents is past its not-after date (or not valid yet: check the clock)",
              "renew the certificate (for the auth proxy: re-apply stage TLS auth proxy, it makes a new one)",
              r"certificate has expired|expired or is not yet valid|certificate is not yet valid",
              "every HTTPS hop of the probe; Verify: Kaniko's view", PROBE),
    Diagnosis("ip-without-san", "IP URL without an IP SAN",
              "`x509: cannot validate certificate for 10.0.0.1 because it doesn't contain any IP SANs`",
              "the URL names an IP address, but the certificate lists only DNS names",
              "use the host name the certificate was made for (with --resolve HOST:PORT:ADDR if DNS is not ready), "
              "or add the IP as a SAN",
              r"doesn't contain any IP SANs", "every HTTPS hop of the probe", PROBE),
    Diagnosis("name-mismatch", "certificate valid for another name",
              "`x509: certificate is valid for X, not Y` / curl `no alternative certificate subject name matches`",
              "the host presents a certificate made for other names than the one the client dialled",
              "make the certificate for the host clients use (the auth proxy's: SAN = the realm host; re-apply stage "
              "TLS auth proxy), or point the name at the server that has it",
              r"certificate is valid for|not valid for any names|no alternative certificate subject name|"
              r"does not match target host name|relies on legacy Common Name",
              "every HTTPS hop of the probe; Verify: Kaniko's view", PROBE),
    Diagnosis("unknown-authority", "x509: certificate signed by unknown authority",
              "`x509: certificate signed by unknown authority` on the registry or the realm",
              "the client does not trust the certificate's issuer; containerd fetches the realm token with the "
              "REGISTRY host's TLS settings, so that entry must trust the realm's certificate too",
              "on nodes: insecure_skip_verify (or a ca_file with both certificates: with registry.node_tls: ca, "
              "apply stage Node registries, which writes that bundle) on the registry host's registries.yaml entry, "
              "then restart k3s; on this machine: registry.ca_file in the plan",
              r"signed by unknown authority|unable to get local issuer certificate|self[- ]signed certificate",
              "every HTTPS hop of the probe; Verify: containerd's view", PROBE),
    Diagnosis("token-endpoint-404", "404 Not Found on the token endpoint",
              "`unexpected status from GET request to https://<realm>/v2/token: 404 Not Found`",
              "Traefik has no HTTPS route for the realm host: its Ingress is on the web entrypoint only",
              "create the separate Ingress with spec.tls and the websecure entrypoint (stage HTTPS ingress)",
              r"v2/token[^\n]*404|404 Not Found[^\n]*token|bearer token: invalid status code from registry 404"
              r"|(oauth|anonymous) token: unexpected status: 404",  # containerd 1.6 names no URL
              "HTTPS ingress (the realm over HTTPS); Verify: containerd's view", TS),
    Diagnosis("push-401", "401 Unauthorized during push",
              "Kaniko: `error checking push permissions: 401 Unauthorized`",
              "the token in the push secret (the one Kaniko mounts) is invalid or expired",
              "create a token with package write access in Gitea, then re-run stages Credentials and Registry secrets",
              r"error checking push permissions", "Verify: the push secret's token may push", TS),
    Diagnosis("pull-denied", "pull refused after authentication",
              "`pull access denied, repository does not exist or may require authorization: … insufficient_scope`",
              "the registry refused the pull with the token it got: the credentials may not read the repository, or "
              "none were sent for the registry host",
              "give the node's registries.yaml (or the pod's pull secret) credentials for the registry host that may "
              "read the organisation's packages",
              r"pull access denied", "Verify: containerd's view and the pull test on each node", PROBE),
    Diagnosis("anonymous-token", "anonymous token accepted while the credentials are wrong",
              "the token endpoint answers 200, but the token is anonymous: reads then fail with `unauthorized: "
              "authentication required`",
              "the realm hands anonymous (ghost) tokens to callers whose credentials it did not accept (Gitea before "
              "1.17 did so for wrong passwords), so a 200 from it proves nothing about the credentials",
              "create a new access token in Gitea and use it; upgrade Gitea (1.17+ rejects wrong passwords); never "
              "take a 200 from /v2/token as proof",
              r"reading manifest [\s\S]*(denied: requested access|authentication required)",
              "Credentials (the token's identity is read); every token walk", PROBE),
    Diagnosis("pull-only-token", "token valid for pull but not for push",
              "`denied: requested access to the resource is denied` when pushing (distribution); real Gitea answers "
              "401: `writing manifest: uploading manifest …: unauthorized: authentication required`",
              "the user behind the token may read the organisation's packages but not write them (Gitea answers a "
              "missing package permission with 401, not 403)",
              "use a token of a user with write access to the organisation (package write scope), then re-run "
              "stages Credentials and Registry secrets",
              r"denied: requested access to the resource is denied|insufficient_scope"
              r"|(writing|uploading) (manifest|blob)[^\n]*unauthorized: authentication required",
              "Credentials (an upload started and cancelled); Verify: the push secret's token may push", PROBE),
    Diagnosis("wrong-token", "401 Unauthorized from the token endpoint",
              "`failed to fetch oauth token: unexpected status from GET request to https://<realm>/v2/token?…: 401 "
              "Unauthorized` (containerd 1.6: `unexpected status: 401 Unauthorized`) / `invalid username/password`",
              "Gitea rejected the username/token pair (wrong, revoked or expired token)",
              "create a new access token in Gitea (Settings → Applications) and run the wizard with it "
              "(GITEA_TOKEN or --token-file)",
              r"(oauth|anonymous) token[^\n]*401|invalid username(/| or )password",
              "Credentials; Verify (pull secret, containerd's view)", TS),
    Diagnosis("token-rejected", "the registry rejects the realm's token",
              "/v2/ still answers 401 with the Bearer token the realm just issued",
              "the registry does not accept tokens from this realm: issuer, audience (service) or signing certificate "
              "differ, or the clocks disagree",
              "make the registry's token settings (issuer, service, root certificate bundle) match the token "
              "issuer's, and sync the clocks",
              "", "every token walk", PROBE),
    Diagnosis("nginx-upstream", "nginx: host not found in upstream",
              "the auth proxy pod crash-loops with `[emerg] host not found in upstream`",
              "nginx resolves a literal proxy_pass host once at startup and refuses to start if DNS is not ready",
              "use `resolver <kube-dns ClusterIP>` with `set $upstream …; proxy_pass $upstream;` (stage TLS auth "
              "proxy writes it so)",
              r"host not found in upstream", "TLS auth proxy (its config)", TS + "; " + DO),
    Diagnosis("nginx-resolver", "nginx resolver cannot resolve the Gitea service",
              "502 Bad Gateway from the auth proxy, `could not be resolved` in its log",
              "the proxy cannot resolve its upstream at request time: its `resolver` is down or is not the "
              "cluster's DNS (kube-dns)",
              "set the resolver to kube-dns's ClusterIP (discovered by Preflight, not hard-coded 10.43.0.10) and "
              "check CoreDNS is running",
              r"could not be resolved|502 Bad Gateway|502 \(Bad Gateway\)", "TLS auth proxy; Verify: Kaniko's view; every probe hop",
              DO),
    Diagnosis("not-restarted", "registries.yaml written but k3s not restarted",
              "the node has the new registries.yaml but pulls still fail the old way",
              "K3s reads registries.yaml only when it starts; containerd's config is still the old one",
              "restart k3s (servers) or k3s-agent (agents) on the node, one at a time (stage Rolling restart)",
              "", "Rolling restart (containerd's generated config against registries.yaml)", TS),
    Diagnosis("k3s-hosts-toml-no-host-table", "k3s wrote a hosts.toml containerd ignores (k3s v1.26.15, v1.27.12, "
              "v1.28.8, v1.29.3)",
              "after the restart the node's pulls from the registry fail with `x509: certificate signed by unknown "
              "authority` although registries.yaml sets insecure_skip_verify or ca_file; containerd logs `invalid "
              "host tree`; the Rolling restart stops at the first node",
              "these k3s releases write certs.d/<host>/hosts.toml for a registries.yaml `configs` entry without a "
              "[host] table; containerd ignores such a file, so the host's TLS settings are lost (the auth, in "
              "config.toml, stays) — k3s#9839, fixed by k3s#9853",
              "upgrade k3s to v1.27.13, v1.28.9, v1.29.4 or later (1.26 has no fixed release: v1.27.13+); on the "
              "broken release, add a mirrors entry for the registry host pointing at itself (`mirrors: {<host>: "
              "{endpoint: [\"https://<host>\"]}}`) to registries.yaml, which gets a [host] table, then restart k3s; "
              "the wizard restarted only this node and touched no other",
              r"invalid host tree", "Rolling restart (the containerd config proof, by the node's k3s release)",
              "issue 15 (k3s#9839)"),
    Diagnosis("kaniko-flags", "--insecure-registry / --skip-tls-verify-registry expected to cover the realm",
              "Kaniko fails on the token endpoint's certificate despite --insecure-registry or "
              "--skip-tls-verify-registry",
              "those flags apply to push/pull requests only, never to the token endpoint's HTTP client, so Kaniko "
              "must trust the proxy's certificate itself",
              "give Kaniko the proxy CA through SSL_CERT_FILE (the CA ConfigMap merged into the bundle by an init "
              "container; stage TLS auth proxy keeps the ConfigMap equal to the certificate)",
              "", "Verify: Kaniko's view", DONT + "; " + DO),
    Diagnosis("kaniko-host-alias", "realm host does not reach the auth proxy from Kaniko's pod",
              "Kaniko cannot connect to the realm host (`Could not resolve host` / `connection refused`)",
              "inside the cluster the realm host must be mapped to the auth proxy's ClusterIP with hostAliases",
              "map the realm host to the gitea-auth-proxy Service's ClusterIP with hostAliases (the generated "
              "workflow does) and check the proxy Service has ready endpoints",
              "", "Verify: Kaniko's view", DO),
    Diagnosis("websecure-without-tls", "websecure entrypoint without spec.tls",
              "an Ingress for the realm host lists web,websecure (or no entrypoints) and no spec.tls: HTTPS answers "
              "with `TRAEFIK DEFAULT CERT` (the guide says Traefik ignores it; K3s's Traefik does not)",
              "K3s's Traefik turns TLS on for the websecure entrypoint itself, so the Ingress is served on 443 with "
              "Traefik's default certificate (SAN *.traefik.default, new at every Traefik restart): nodes accept it "
              "only with insecure_skip_verify, and nothing can pin it",
              "use a separate Ingress with spec.tls.hosts and the websecure entrypoint (stage HTTPS ingress), so the "
              "realm presents a certificate that names it",
              "", "HTTPS ingress", DONT + "; " + DO),
    Diagnosis("realm-host-mismatch", "realm host differs from the expected host",
              "the registry's challenge names a realm on another host than the plan's ROOT_URL and than the host "
              "asked",
              "Gitea up to 1.22.0 names ROOT_URL; from 1.22.1 the request's Host when X-Forwarded-Proto is set, and "
              "from 1.26 the request's Host always — a realm on a third host means ROOT_URL is not what the plan "
              "says, or a proxy rewrote Host",
              "set gitea.root_url in the plan to Gitea's actual ROOT_URL, and make the proxies in front of Gitea "
              "pass the Host the client asked",
              "", "Verify: this machine's and Kaniko's view of the challenge", PROBE),
    Diagnosis("realm-plain-http", "realm over plain HTTP",
              "the challenge realm is http://… for a client that asked over HTTPS",
              "ROOT_URL is http:// (Gitea up to 1.22.0), or Gitea 1.22.1+ derived the realm from a request whose "
              "X-Forwarded-Proto said http — Traefik's web entrypoint overwrites it from untrusted peers (Caddy → "
              "Traefik web): the credentials would go to the token endpoint in clear",
              "set Gitea's ROOT_URL to https://…; send the TLS proxy (Caddy) straight to Gitea, or list its address "
              "in Traefik's forwardedHeaders.trustedIPs; on Gitea 1.26+ PUBLIC_URL_DETECTION=never pins ROOT_URL",
              r"Client sent an HTTP request to an HTTPS server|oauth token: unexpected status[^\n]*: 400",
              "Verify: this machine's and Kaniko's view of the challenge", PROBE),
    Diagnosis("registry-unreachable", "registry host not reachable from this machine",
              "`pinging container registry …: dial tcp …: connection refused` / `no such host`",
              "this machine cannot resolve or reach the registry host",
              "fix DNS for the registry host, or pass --resolve HOST:PORT:ADDR (network.resolve in the plan)",
              r"pinging container registry[^\n]*(no such host|connection refused|i/o timeout)",
              "Credentials; Verify (this machine's view)", PROBE),
    Diagnosis("realm-unreachable", "realm host not reachable from this machine",
              "the token request to the realm fails to connect",
              "this machine cannot resolve or reach Gitea's ROOT_URL host",
              "fix DNS for the realm host, or pass --resolve HOST:PORT:ADDR (network.resolve in the plan)",
              "", "HTTPS ingress; Verify (this machine's view)", PROBE),
    Diagnosis("socat-proxy", "socat as the auth proxy",
              "alpine/socat cannot resolve the Gitea service FQDN",
              "musl's getaddrinfo in alpine/socat fails on K8s service FQDNs",
              "use the nginx auth proxy with resolver + set $upstream (stage TLS auth proxy)",
              "", "Verify: Kaniko's view (the proxy's image)", DONT),
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
             "it prints. Each entry's key is what `ghcr2gitea audit --format json` reports as a failing check's "
             "`evidence.diagnosis`.", ""]
    for d in CATALOGUE:
        lines += [f"## {d.title}", "", f"`{d.key}` — {d.source}", "", f"**Symptom:** {d.symptom}", "",
                  f"**Cause:** {d.cause}", "", f"**Fix:** {d.fix}", ""]
        if d.detected_by:
            lines += [f"**Detected by:** {d.detected_by}", ""]
    return "\n".join(lines)
