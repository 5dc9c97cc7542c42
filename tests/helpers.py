"""Helpers the tests share: real binaries, fast sandbox options, the state endpoint, the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.cluster import Options
from sandbox.server import Sandbox

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent  # the checkout under test (a worktree's, not the editable install's)


def require_binary(name: str) -> str:
    """Path of a real binary; skip locally when missing, fail under CI (it must be installed there)."""
    venv_bin = Path(sys.executable).parent / name
    path = str(venv_bin) if venv_bin.exists() else shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed: CI must install it (scripts/ensure-debs)")
        pytest.skip(f"{name} is not installed (as root: make debs)")
    return path


def fast_options(**overrides) -> Options:
    """Sandbox options for tests: quick restarts and heartbeats, short back-offs."""
    base = dict(restart_seconds=(0.2, 0.4), lease_interval=1.0, time_scale=0.05)
    base.update(overrides)
    return Options(**base)


def sandbox_state(sb: Sandbox) -> dict:
    """The sandbox's state JSON at its ``state-url`` (no auth; the embedded API's self-signed TLS, or plain HTTP
    beside a real API server)."""
    import time

    import httpx
    deadline = time.monotonic() + 20
    while True:  # the API port is down while the sandbox restarts k3s on dellmini1
        try:
            return httpx.get(sb.state_url, verify=False, timeout=10).json()
        except httpx.TransportError:  # refused, or cut mid-response (RemoteProtocolError) while it restarts
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def secrets_and_node_files(sb: Sandbox) -> str:
    """Every Secret's decoded data and every node file, as one text to scan for a token."""
    import base64

    from wizard.cluster import Cluster
    state = sandbox_state(sb)
    texts = [body for node in state["nodes"].values() for body in node["files"].values() if isinstance(body, str)]
    api = Cluster.connect(str(sb.kubeconfig))
    try:
        for s in api.list("Secret", None):
            for v in (s.get("data") or {}).values():
                texts.append(base64.b64decode(v).decode(errors="replace"))
    finally:
        api.close()
    return "\n".join(texts)


MUTATING = ("POST", "PUT", "PATCH", "DELETE")


def mutating_requests(sb: Sandbox) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in sandbox_state(sb)["requests"] if r["method"] in MUTATING]


def run_cli(sb: Sandbox | None, *args: str, token: str | None = "sandbox", env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``ghcr2gitea ARGS`` as a user would, against the sandbox's kubeconfig and token."""
    full = {k: v for k, v in os.environ.items() if k not in ("GITEA_TOKEN", "KUBECONFIG")}
    if sb is not None:
        full["KUBECONFIG"] = str(sb.kubeconfig)
        if token == "sandbox":
            full["GITEA_TOKEN"] = sb.token_file.read_text().strip()
    if token not in (None, "sandbox"):
        full["GITEA_TOKEN"] = token
    if sb is not None:
        full["XDG_STATE_HOME"] = str(sb.dir / "xdg-state")  # journals stay with the test's sandbox
    # the venv's entry point imports the package the venv was installed from; the checkout's code goes first
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full.get("PYTHONPATH", "")) if p)
    full.update(env or {})
    return subprocess.run([str(Path(sys.executable).parent / "ghcr2gitea"), *args], capture_output=True, text=True,
                          env=full, timeout=timeout, stdin=subprocess.DEVNULL)


def migrate_then_audit_clean(sb: Sandbox, node_timeout: str = "20") -> None:
    """``apply --yes`` restarts and proves every node exactly once; ``audit --node-probes`` then finds nothing left."""
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", node_timeout)
    assert res.returncode == 0, res.stdout + res.stderr
    nodes = sandbox_state(sb)["nodes"]
    assert {n: len(v["restarts"]) for n, v in nodes.items()} == dict.fromkeys(nodes, 1)
    for name in nodes:
        assert f"{name}: restarted and proven" in res.stdout, res.stdout
    audit = run_cli(sb, "audit", "--plan", str(sb.plan), "--node-probes")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "changed after k3s last started" not in audit.stdout
    assert {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()} == dict.fromkeys(nodes, 1)


# a node's registries.yaml before the migration: a docker.io mirror and another registry's credentials
EXISTING_REGISTRIES = """mirrors:
  docker.io:
    endpoint:
      - "https://mirror.example.test"
configs:
  "quay.example.test":
    auth:
      username: robot
      password: keep-me
"""


GUIDE_HOSTS = ("registry.bto.bar", "registry.k3s.bto.bar", "gitea.k3s.bto.bar")


def guide_registries(hosts=GUIDE_HOSTS, username: str = "registry-user", password: str = "<GITEA_TOKEN>") -> str:
    """The guide's Step 5 registries.yaml, byte for byte (its layout, for other hosts and a real token too)."""
    lines = ["configs:"]
    for h in hosts:
        lines += [f'  "{h}":', "    tls:", "      insecure_skip_verify: true", "    auth:",
                  f"      username: {username}", f"      password: {password}"]
    return "\n".join(lines) + "\n"


def poll(fn, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """fn() until truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


async def until(pilot, cond, *, what, timeout: float = 10.0):
    """``cond()`` until truthy, its value, letting the app work between tries (``pilot.pause()`` without a
    delay: Textual processes what is pending and waits for idle); fails saying ``what`` was expected (a string,
    or a callable for a message built at the deadline) once ``timeout`` seconds have passed. The async twin of
    ``poll``: a Pilot test waits for the state it asserts, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what() if callable(what) else what} — not within {timeout} s")
        await pilot.pause()


def require_components(*names: str) -> None:
    """The real components a test needs (scripts/build-real): skip locally when one is missing, fail in CI."""
    from sandbox import realapi, realgitea
    try:
        for name in names:
            realapi.binary(name)
        for name in names:
            if name.startswith("gitea"):
                realgitea.assets(name)
    except realapi.ComponentMissing as e:
        if IN_CI:
            pytest.fail(f"{e} (CI must build it: make test runs scripts/build-real)")
        pytest.skip(str(e))


def secret_forms(secret: str, username: str = "registry-user") -> list[str]:
    """The secret and the encodings a leak would likely take: base64 alone (its last characters depend on what
    follows it, so they are left off) and in a ``user:secret`` pair, JSON-escaped, YAML single-quoted."""
    import base64
    import json
    forms = [secret, base64.b64encode(secret.encode()).decode().rstrip("=")[:-2]]
    forms.append(base64.b64encode(f"{username}:{secret}".encode()).decode().rstrip("=")[:-4])
    forms.append(json.dumps(secret)[1:-1])
    forms.append(secret.replace("'", "''"))
    return list(dict.fromkeys(forms))


def assert_nowhere(produced: dict[str, str], *secrets: str) -> None:
    """None of ``secrets``, in any of its ``secret_forms``, in any text of ``produced`` (``{where: text}``)."""
    for where, text in produced.items():
        for secret in secrets:
            for form in secret_forms(secret):
                assert form not in text, f"{secret[:10]}… (as {form[:14]}…) leaked into {where}"


def pod_logs(sb: Sandbox) -> dict[str, str]:
    """Every container log the sandbox's kubelets hold (what ``pods/NAME/log`` serves), ``{where: text}``."""
    return {f"pod log {ns}/{name}": text for (ns, name, _), text in list(sb.cluster.logs.items())}


CLUSTER_LISTS = ("/api/v1/configmaps", "/api/v1/pods", "/api/v1/events", "/apis/apps/v1/deployments",
                 "/apis/apps/v1/statefulsets", "/apis/coordination.k8s.io/v1/leases",
                 "/apis/networking.k8s.io/v1/ingresses")


def left_in_the_world(sb: Sandbox, state: Path | None = None) -> dict[str, str]:
    """Where a run may leave a token that is neither a Secret nor a node file, as ``{where: text}``: every cluster
    object of CLUSTER_LISTS (ConfigMaps, pods, events, Deployments, StatefulSets, Leases, Ingresses), the journal's
    ConfigMap mirror, each file under the state directory ``state`` (default: the one run_cli gives the sandbox),
    every pod log, and a real control plane's logs (its audit log among them)."""
    import json

    from kubernetes import client

    from wizard.kube import api_client
    api = api_client(str(sb.kubeconfig))
    try:
        auth = (api.configuration.api_key.get("authorization", "")
                or f"Bearer {api.configuration.api_key.get('BearerToken', '')}")
        produced = {f"cluster objects {path}": api.call_api("GET", api.configuration.host + path,
                                                            header_params={"Authorization": auth}).read().decode()
                    for path in CLUSTER_LISTS}
        journal = client.CoreV1Api(api).read_namespaced_config_map("ghcr2gitea-journal", "kube-system")
        produced["journal ConfigMap"] = journal.data["journal.json"]
    finally:
        api.close()
    assert json.loads(produced["journal ConfigMap"])["events"], "the journal mirror is empty"
    files = [f for f in (state or sb.dir / "xdg-state").rglob("*") if f.is_file()]
    assert any(f.suffix == ".json" for f in files), "no journal file was written"  # <cluster id>.json
    produced.update({str(f): f.read_text(errors="replace") for f in files})
    produced.update(pod_logs(sb))
    if sb.plane is not None:
        produced.update({f"real control plane: {f.name}": f.read_text(errors="replace")
                         for f in sb.plane.dir.glob("*.log")})
    return produced
