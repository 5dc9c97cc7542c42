"""The registry world, walked by hand with the guide's steps through the real client.

This is the sandbox's acceptance test: the same pods, secrets, Ingresses, registries.yaml and
restarts an operator applies with kubectl make pulls and the auth flow fail and succeed for the
same reasons as on the real cluster (guide Steps 2–5, Troubleshooting, and the containerd facts
in test-environment.md). Nothing is set up through sandbox internals; the sandbox's state is only
read (``GET /_sandbox/state``).
"""

from __future__ import annotations

import base64
import itertools
import json
import time

import httpx
import pytest
import yaml
from helpers import poll
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.pki import make_cert

NS = "default"
ORG_IMAGE = "jaybrto/gwa-webhook"
CURL_IMAGE = "alpine/curl:8.5.0"
GITEA_SVC = "gitea-http.gitea-system.svc.cluster.local:3000"
_names = itertools.count(1)


# ---------------------------------------------------------------------------------------------- the world
class World:
    """What the operator knows: the plan, the token, and the client."""

    def __init__(self, sb, k8s):
        self.sb = sb
        self.plan = yaml.safe_load(sb.plan.read_text())
        self.token = sb.token_file.read_text().strip()
        self.user = self.plan["gitea"]["username"]
        self.registry = self.plan["registry"]["host"]  # registry.example.test:PORT
        self.realm = self.plan["gitea"]["root_url"].split("//", 1)[1].rstrip("/")  # gitea.k3s.example.test:PORT
        self.realm_name = self.realm.rsplit(":", 1)[0]
        self.image = next(i["target"] for i in self.plan["images"] if i["target"].endswith(ORG_IMAGE)) + ":latest"
        self.v1 = client.CoreV1Api(k8s)
        self.apps = client.AppsV1Api(k8s)
        self.net = client.NetworkingV1Api(k8s)

    # -- state
    def state(self) -> dict:
        return httpx.get(f"{self.sb.api_url}/_sandbox/state", verify=False, timeout=5).json()

    def role(self, node: str) -> str:
        return self.state()["nodes"][node]["role"]

    # -- Step 2: pull secret
    def pull_secret(self, password: str | None = None, name: str = "gitea-registry-secret") -> None:
        pw = self.token if password is None else password
        cfg = {"auths": {self.registry: {"username": self.user, "password": pw,
                                         "auth": base64.b64encode(f"{self.user}:{pw}".encode()).decode()}}}
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64.b64encode(json.dumps(cfg).encode()).decode()}}
        try:
            self.v1.create_namespaced_secret(NS, body)
        except ApiException as e:
            assert e.status == 409
            self.v1.replace_namespaced_secret(name, NS, body)

    # -- Step 4: the TLS Ingress
    def tls_ingress(self) -> None:
        self.net.create_namespaced_ingress("gitea-system", {
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "gitea-k3s-alias-tls", "namespace": "gitea-system", "annotations": {
                "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
                "traefik.ingress.kubernetes.io/router.tls": "true"}},
            "spec": {"tls": [{"hosts": [self.realm_name]}], "rules": [{"host": self.realm_name, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "gitea-http", "port": {"number": 3000}}}}]}}]}})

    # -- Step 5: registries.yaml through nsenter pods, and the restart
    def write_registries(self, text: str, nodes: list[str] | None = None) -> None:
        script = f"mkdir -p /etc/rancher/k3s\ncat > /etc/rancher/k3s/registries.yaml << 'EOF'\n{text}EOF\n" \
                 'echo "Done on $(hostname)"\n'
        for node in nodes or list(self.state()["nodes"]):
            phase, code, log = self.on_node(node, script)
            assert (phase, code, log) == ("Succeeded", 0, f"Done on {node}\n")

    def restart(self, node: str) -> None:
        unit = "k3s" if self.role(node) == "server" else "k3s-agent"
        n = len(self.state()["nodes"][node]["restarts"])
        assert self.on_node(node, f"systemctl --no-block restart {unit}")[:2] == ("Succeeded", 0)

        def done():
            rs = self.state()["nodes"][node]["restarts"]
            return len(rs) > n and rs[-1]["end"] is not None
        poll(done, what=f"{node} restarted")
        assert self.on_node(node, f"systemctl is-active {unit}")[2] == "active\n"

    # -- pods
    def on_node(self, node: str, script: str) -> tuple[str, int, str]:
        return self.run(pod_body(node_name=node, host_pid=True, containers=[{
            "name": "x", "image": "alpine:3.20", "securityContext": {"privileged": True},
            "command": ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "--", "sh", "-c", script]}]))

    def in_pod(self, script: str, **spec) -> tuple[str, int, str]:
        return self.run(pod_body(containers=[{"name": "c", "image": CURL_IMAGE, "command": ["sh", "-c", script],
                                              **spec.pop("container", {})}], **spec))

    def run(self, body: dict, timeout: float = 15.0) -> tuple[str, int, str]:
        """(phase, exit code, log) of a pod that runs to completion; the pod is deleted afterwards."""
        name = body["metadata"]["name"]
        self.v1.create_namespaced_pod(NS, body)
        try:
            pod = poll(lambda: (lambda p: p if p.status.phase in ("Succeeded", "Failed") else None)(
                self.v1.read_namespaced_pod(name, NS)), timeout=timeout, what=f"pod {name} done")
            term = pod.status.container_statuses[0].state.terminated
            code = term.exit_code if term else -1
            return pod.status.phase, code, self.v1.read_namespaced_pod_log(name, NS, container=body["spec"][
                "containers"][0]["name"])
        finally:
            self.v1.delete_namespaced_pod(name, NS)

    def app_pod(self, node: str | None = None, image: str | None = None) -> str:
        """The guide's workload pod: the registry image and the pull secret."""
        body = pod_body(node_name=node, restart_policy="Always", image_pull_secrets=[{"name": "gitea-registry-secret"}],
                        containers=[{"name": "webhook", "image": image or self.image}])
        self.v1.create_namespaced_pod(NS, body)
        return body["metadata"]["name"]

    def pull_failure(self, name: str, timeout: float = 10.0) -> str:
        """The message of the kubelet's Failed event for the pull, once the container waits in a pull error."""
        def failed():
            pod = self.v1.read_namespaced_pod(name, NS)
            cs = (pod.status.container_statuses or [None])[0]
            if cs is None or cs.state.waiting is None or cs.state.waiting.reason not in (
                    "ErrImagePull", "ImagePullBackOff"):
                assert not (cs and cs.state.running), f"{name} is running: {cs.image_id}"
                return None
            events = self.v1.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items
            msgs = [e.message for e in events if e.involved_object.name == name and e.reason == "Failed"
                    and e.message.startswith("Failed to pull image")]
            return msgs[-1] if msgs else None
        return poll(failed, timeout=timeout, what=f"pull failure of {name}")

    def running(self, name: str, timeout: float = 10.0) -> client.V1ContainerStatus:
        def up():
            pod = self.v1.read_namespaced_pod(name, NS)
            cs = (pod.status.container_statuses or [None])[0]
            return cs if pod.status.phase == "Running" and cs and cs.state.running else None
        return poll(up, timeout=timeout, what=f"{name} running")

    def delete(self, name: str) -> None:
        self.v1.delete_namespaced_pod(name, NS)


def pod_body(*, containers: list[dict], node_name: str | None = None, host_pid: bool = False,
             restart_policy: str = "Never", **extra) -> dict:
    spec = {"restartPolicy": restart_policy, "containers": containers}
    if node_name:
        spec["nodeName"] = node_name
    if host_pid:
        spec["hostPID"] = True
    keys = {"image_pull_secrets": "imagePullSecrets", "host_aliases": "hostAliases",
            "init_containers": "initContainers", "volumes": "volumes"}
    spec.update({keys[k]: v for k, v in extra.items()})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"w{next(_names)}-{int(time.time() * 1e3) % 10**6}"},
            "spec": spec}


def registries(entries: dict[str, dict]) -> str:
    return yaml.safe_dump({"configs": entries}, sort_keys=False)


SKIP = {"tls": {"insecure_skip_verify": True}}
X509 = "x509: certificate signed by unknown authority"


@pytest.fixture
def world(make_sandbox) -> World:
    # these tests are about the pull path, not the copy: Gitea already holds the images (as copied from GHCR)
    from wizard.kube import api_client
    sb = make_sandbox(gitea_preloaded=True)
    api = api_client(str(sb.kubeconfig))
    try:
        yield World(sb, api)
    finally:
        api.close()


# ---------------------------------------------------------------------------------------------- 1. pulls
def test_pull_fails_for_each_missing_step_then_works(world):
    w = world
    w.pull_secret()
    # before anything: Caddy's certificate is from the LAN CA, which the node does not trust
    first = w.app_pod()
    msg = w.pull_failure(first)
    assert X509 in msg
    assert f'Head "https://{w.registry}/v2/{ORG_IMAGE}/manifests/latest"' in msg
    assert msg.startswith(f'Failed to pull image "{w.image}": rpc error: code = Unknown')
    node = w.v1.read_namespaced_pod(first, NS).spec.node_name
    assert node
    w.delete(first)

    # registries.yaml everywhere (skip_verify on the registry host only), no restart: not loaded
    text = registries({w.registry: SKIP})
    w.write_registries(text)
    st = w.state()["nodes"]
    assert all(n["files"]["/etc/rancher/k3s/registries.yaml"] == text for n in st.values())
    assert all(n["loaded_registries"] is None for n in st.values())
    second = w.app_pod(node)
    assert X509 in w.pull_failure(second)
    w.delete(second)

    # restart k3s on the pod's node: loaded; now the realm's token endpoint has no HTTPS route
    w.restart(node)
    assert w.state()["nodes"][node]["loaded_registries"] == text
    third = w.app_pod(node)
    msg = w.pull_failure(third)
    assert X509 not in msg
    assert "failed to authorize: failed to fetch oauth token: unexpected status from GET request to " \
           f"https://{w.realm}/v2/token?" in msg
    assert msg.endswith("404 Not Found")

    # the guide's Step 4 Ingress: the same pod pulls on its next back-off retry and runs
    w.tls_ingress()
    cs = w.running(third)
    assert cs.image_id.startswith(f"{w.registry}/{ORG_IMAGE}@sha256:")
    assert cs.image == w.image
    events = w.v1.list_namespaced_event(NS, field_selector=f"involvedObject.name={third}").items
    assert any(e.reason == "Pulled" and e.involved_object.name == third for e in events)

    # a node that was never restarted still fails on TLS, with the Ingress in place
    other = next(n for n in st if n != node)
    fourth = w.app_pod(other)
    assert X509 in w.pull_failure(fourth)


def test_realm_host_entry_alone_changes_nothing_for_pulls(world):
    """containerd fetches the token with the REGISTRY host's TLS settings; the realm's entry is never used."""
    w = world
    w.pull_secret()
    w.tls_ingress()
    w.write_registries(registries({w.realm: SKIP}), ["dellmini5"])
    w.restart("dellmini5")
    msg = w.pull_failure(w.app_pod("dellmini5"))
    assert X509 in msg and f'Head "https://{w.registry}/v2/' in msg


def test_registry_ca_without_realm_trust_fails_on_the_token_request(world):
    """ca_file for the registry (LAN CA) and skip_verify on the realm: the realm's Traefik cert is not trusted."""
    w = world
    w.pull_secret()
    w.tls_ingress()
    ca = w.sb.ca_file.read_text()
    assert w.on_node("dellmini2", f"mkdir -p /etc/rancher/k3s\ncat > /etc/rancher/k3s/lan-ca.crt << 'EOF'\n{ca}EOF\n")[1] == 0
    w.write_registries(registries({w.registry: {"tls": {"ca_file": "/etc/rancher/k3s/lan-ca.crt"}},
                                   w.realm: SKIP}), ["dellmini2"])
    w.restart("dellmini2")
    msg = w.pull_failure(w.app_pod("dellmini2"))
    assert f'failed to fetch oauth token: Post "https://{w.realm}/v2/token": tls: failed to verify certificate: ' \
           "x509:" in msg


def test_wrong_password_in_pull_secret_is_401(world):
    w = world
    w.pull_secret(password="not-the-token")
    w.tls_ingress()
    w.write_registries(registries({w.registry: SKIP}), ["dellmini3"])
    w.restart("dellmini3")
    msg = w.pull_failure(w.app_pod("dellmini3"))
    assert f"failed to fetch oauth token: unexpected status from GET request to https://{w.realm}/v2/token?" in msg
    assert "&service=container_registry: 401 Unauthorized" in msg
    # the right token in the same secret: the next attempt pulls
    w.pull_secret()
    name = w.app_pod("dellmini3")
    assert w.running(name).image_id.startswith(f"{w.registry}/{ORG_IMAGE}@sha256:")


def test_missing_pull_secret_is_denied(world):
    """No credentials: Gitea hands out an anonymous token, which cannot read the private package."""
    w = world
    w.tls_ingress()
    w.write_registries(registries({w.registry: SKIP}), ["dellmini3"])
    w.restart("dellmini3")
    msg = w.pull_failure(w.app_pod("dellmini3"))  # the secret it names does not exist
    assert "pull access denied, repository does not exist or may require authorization" in msg
    assert "insufficient_scope" in msg


# ---------------------------------------------------------------------------------------------- 2. cluster DNS
def test_cluster_dns_name_as_image_registry_does_not_resolve(world):
    w = world
    w.pull_secret()
    msg = w.pull_failure(w.app_pod("dellmini1", image=f"{GITEA_SVC}/{ORG_IMAGE}:latest"))
    assert "no such host" in msg
    assert "gitea-http.gitea-system.svc.cluster.local" in msg


# ---------------------------------------------------------------------------------------------- 3. pod network
CODE = "curl -s -o /dev/null -w '%{http_code}' "


def test_cluster_dns_works_in_pods_not_on_nodes(world):
    w = world
    assert w.in_pod(CODE + f"http://{GITEA_SVC}/v2/") == ("Succeeded", 0, "401")
    # the short name through the pod's search domains
    assert w.in_pod(CODE + "http://gitea-http.gitea-system:3000/v2/")[2] == "401"
    phase, code, log = w.on_node("dellmini2", CODE + f"http://{GITEA_SVC}/v2/")
    assert (phase, code) == ("Failed", 6)
    phase, code, log = w.on_node("dellmini2", f"curl -sS http://{GITEA_SVC}/v2/")
    assert code == 6 and "Could not resolve host" in log


def test_realm_token_endpoint_from_a_pod(world):
    w = world
    url = f"https://{w.realm}/v2/token?service=container_registry"
    assert w.in_pod(CODE + f"-k '{url}'") == ("Succeeded", 0, "404")
    w.tls_ingress()
    assert w.in_pod(CODE + f"-k '{url}'")[2] == "200"
    phase, code, log = w.in_pod(f"curl -sk '{url}'")  # Gitea gives anonymous callers a token too
    assert code == 0 and json.loads(log)["token"]
    phase, code, log = w.in_pod(f"curl -sk -u {w.user}:{w.token} '{url}&scope=*'")
    assert code == 0 and json.loads(log)["token"]
    # Traefik's default certificate is not trusted without -k
    phase, code, log = w.in_pod(f"curl -sS '{url}'")
    assert (phase, code) == ("Failed", 60)
    assert "certificate" in log.lower()


# ---------------------------------------------------------------------------------------------- 4. auth proxy
PROXY_CONF = """\
server {
  listen 443 ssl;
  ssl_certificate /etc/nginx/tls/tls.crt;
  ssl_certificate_key /etc/nginx/tls/tls.key;

  # CoreDNS resolver IP (find yours: kubectl get svc -n kube-system kube-dns)
  %(resolver)s

  location / {
    # IMPORTANT: Use a variable so nginx resolves at runtime, not startup
    set $upstream http://%(upstream)s;
    proxy_pass $upstream;
    proxy_set_header Host $host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_buffering off;
    client_max_body_size 0;
  }
}
"""
LITERAL_CONF = """\
server {
  listen 443 ssl;
  ssl_certificate /etc/nginx/tls/tls.crt;
  ssl_certificate_key /etc/nginx/tls/tls.key;
  location / {
    proxy_pass http://%(upstream)s;
    proxy_set_header Host $host;
  }
}
"""


def tls_and_ca(w: World) -> None:
    cert = make_cert(w.realm_name, [w.realm_name])  # self-signed, as the guide's openssl command
    w.v1.create_namespaced_secret(NS, {"metadata": {"name": "gitea-proxy-tls"}, "type": "kubernetes.io/tls", "data": {
        "tls.crt": base64.b64encode(cert.cert_pem).decode(), "tls.key": base64.b64encode(cert.key_pem).decode()}})
    w.v1.create_namespaced_config_map(NS, {"metadata": {"name": "gitea-proxy-ca"},
                                           "data": {"ca.crt": cert.cert_pem.decode()}})


def deploy_proxy(w: World, conf: str, name: str = "gitea-auth-proxy") -> str:
    """The guide's Step 3 proxy under ``name``; returns the Service's ClusterIP once the pod is ready."""
    w.v1.create_namespaced_config_map(NS, {"metadata": {"name": f"{name}-config"}, "data": {"default.conf": conf}})
    labels = {"app": name}
    w.apps.create_namespaced_deployment(NS, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{
                "name": "nginx", "image": "nginx:alpine", "ports": [{"containerPort": 443}],
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/nginx/conf.d/default.conf", "subPath": "default.conf"},
                    {"name": "tls", "mountPath": "/etc/nginx/tls", "readOnly": True}],
                "resources": {"requests": {"memory": "16Mi", "cpu": "10m"}, "limits": {"memory": "64Mi", "cpu": "50m"}}}],
                "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}},
                            {"name": "tls", "secret": {"secretName": "gitea-proxy-tls"}}]}}}})
    svc = w.v1.create_namespaced_service(NS, {
        "metadata": {"name": name, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": labels, "ports": [{"port": 443, "targetPort": 443, "protocol": "TCP"}]}})

    def available():
        st = w.apps.read_namespaced_deployment(name, NS).status
        return (st.ready_replicas or 0) >= 1
    poll(available, what=f"{name} available")
    return svc.spec.cluster_ip


def kaniko_like(w: World, proxy_ip: str, script: str, trust: bool = True) -> tuple[str, int, str]:
    """The guide's Kaniko pod shape: hostAliases to the proxy, the merged CA bundle via SSL_CERT_FILE."""
    container = {"volumeMounts": [{"name": "merged-certs", "mountPath": "/certs"}]}
    if trust:
        container["env"] = [{"name": "SSL_CERT_FILE", "value": "/certs/ca-certificates.crt"}]
    return w.in_pod(script, container=container, host_aliases=[{"ip": proxy_ip, "hostnames": [w.realm_name]}],
                    init_containers=[{
                        "name": "setup-certs", "image": "alpine:3.20",
                        "command": ["sh", "-c", "cat /etc/ssl/certs/ca-certificates.crt /custom-ca/ca.crt > "
                                                "/certs/ca-certificates.crt"],
                        "volumeMounts": [{"name": "merged-certs", "mountPath": "/certs"},
                                         {"name": "custom-ca", "mountPath": "/custom-ca"}]}],
                    volumes=[{"name": "custom-ca", "configMap": {"name": "gitea-proxy-ca"}},
                             {"name": "merged-certs", "emptyDir": {}}])


def test_auth_proxy_as_kaniko_sees_it(world):
    w = world
    tls_and_ca(w)
    ip = deploy_proxy(w, PROXY_CONF % {"resolver": "resolver 10.43.0.10 valid=30s;", "upstream": GITEA_SVC})
    assert w.in_pod(CODE + f"-k https://{ip}/v2/") == ("Succeeded", 0, "401")

    url = f"https://{w.realm_name}:443/v2/token?service=container_registry"
    assert kaniko_like(w, ip, CODE + f"'{url}'") == ("Succeeded", 0, "200")
    phase, code, log = kaniko_like(w, ip, f"curl -sS -u {w.user}:{w.token} '{url}&scope=*'")
    assert code == 0 and json.loads(log)["token"]
    # without the merged bundle the self-signed proxy certificate is not trusted
    phase, code, log = kaniko_like(w, ip, f"curl -sS '{url}'", trust=False)
    assert (phase, code) == ("Failed", 60)
    # the world's public port is Traefik, not the proxy: with only the name mapped, a pod cannot reach it there
    phase, code, log = kaniko_like(w, ip, CODE + f"'https://{w.realm}/v2/token'")
    assert code == 7


def test_auth_proxy_literal_upstream_works(world):
    w = world
    tls_and_ca(w)
    ip = deploy_proxy(w, LITERAL_CONF % {"upstream": GITEA_SVC}, "proxy-literal")
    assert w.in_pod(CODE + f"-k https://{ip}/v2/") == ("Succeeded", 0, "401")


@pytest.mark.parametrize(("resolver", "upstream"), [
    ("resolver 1.1.1.1 valid=30s;", GITEA_SVC),  # a public resolver does not know cluster names
    ("", GITEA_SVC),  # a variable upstream needs a resolver
    ("resolver 10.43.0.10 valid=30s;", "gitea-http.gitea-system:3000"),  # nginx's resolver has no search path
], ids=["public-resolver", "no-resolver", "short-name"])
def test_auth_proxy_runtime_resolution_failures_are_502(world, resolver, upstream):
    w = world
    tls_and_ca(w)
    ip = deploy_proxy(w, PROXY_CONF % {"resolver": resolver, "upstream": upstream}, "proxy-variant")
    assert w.in_pod(CODE + f"-k https://{ip}/v2/") == ("Succeeded", 0, "502")


def test_auth_proxy_with_an_unresolvable_literal_upstream_does_not_start(world):
    """The guide's Troubleshooting: "host not found in upstream" at startup."""
    w = world
    tls_and_ca(w)
    name = "proxy-bad-upstream"
    w.v1.create_namespaced_config_map(NS, {"metadata": {"name": f"{name}-config"}, "data": {
        "default.conf": LITERAL_CONF % {"upstream": "gitea-http.nowhere.svc.cluster.local:3000"}}})
    labels = {"app": name}
    w.apps.create_namespaced_deployment(NS, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{
                "name": "nginx", "image": "nginx:alpine", "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/nginx/conf.d/default.conf", "subPath": "default.conf"},
                    {"name": "tls", "mountPath": "/etc/nginx/tls"}]}],
                "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}},
                            {"name": "tls", "secret": {"secretName": "gitea-proxy-tls"}}]}}}})

    def crashing():
        pods = w.v1.list_namespaced_pod(NS, label_selector=f"app={name}").items
        for p in pods:
            cs = (p.status.container_statuses or [None])[0]
            if cs and cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff":
                return p.metadata.name
        return None
    pod = poll(crashing, what="CrashLoopBackOff")
    assert "host not found in upstream" in w.v1.read_namespaced_pod_log(pod, NS)
