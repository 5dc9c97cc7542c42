"""Simulated K3s nodes, driven only as the wizard drives them: privileged nsenter pods over the real client.

Every script runs in a pod pinned to a node (``nodeName``, ``hostPID``, privileged, ``nsenter -t 1 -m
-u -i -n -- sh -c SCRIPT``); what it printed comes back through ``read_namespaced_pod_log``. The
sandbox's own view is only read, through ``GET /_sandbox/state``.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime

import httpx
import pytest
import urllib3
import yaml
from helpers import guide_registries, poll
from kubernetes import client
from kubernetes.client.rest import ApiException

from wizard.kube import api_client

NS = "default"
CONTAINERD = "/var/lib/rancher/k3s/agent/etc/containerd"
REGISTRIES = "/etc/rancher/k3s/registries.yaml"
_names = itertools.count(1)


# ---------------------------------------------------------------------------------------------- helpers
def node_pod(node: str, script: str, *, name: str | None = None, host_pid: bool = True) -> dict:
    """The guide's Step 5 pod, pinned to ``node``, running ``script`` in the host's namespaces."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name or f"node-{node}-{next(_names)}", "namespace": NS},
        "spec": {"nodeName": node, "restartPolicy": "Never", "hostPID": host_pid, "containers": [{
            "name": "x", "image": "alpine:3.20", "securityContext": {"privileged": True},
            "command": ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "--", "sh", "-c", script]}]},
    }


def wait_done(v1: client.CoreV1Api, name: str, timeout: float = 15.0) -> client.V1Pod:
    deadline = time.monotonic() + timeout
    while True:
        pod = v1.read_namespaced_pod(name, NS)
        if pod.status.phase in ("Succeeded", "Failed"):
            return pod
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {name} still {pod.status.phase} after {timeout} s")
        time.sleep(0.05)


def run_pod(v1: client.CoreV1Api, body: dict, timeout: float = 15.0) -> tuple[str, int, str]:
    """Create the pod, wait for it to finish; (phase, exit code, log). The pod is deleted afterwards."""
    name = body["metadata"]["name"]
    v1.create_namespaced_pod(NS, body)
    try:
        pod = wait_done(v1, name, timeout)
        log = v1.read_namespaced_pod_log(name, NS)
        code = pod.status.container_statuses[0].state.terminated.exit_code
        return pod.status.phase, code, log
    finally:
        v1.delete_namespaced_pod(name, NS)


def on_node(v1: client.CoreV1Api, node: str, script: str, timeout: float = 15.0) -> tuple[str, int, str]:
    return run_pod(v1, node_pod(node, script), timeout)


def state(sb) -> dict:
    """The sandbox's own view (no auth, self-signed)."""
    return httpx.get(f"{sb.api_url}/_sandbox/state", verify=False, timeout=5).json()


def registries_yaml(sb) -> str:
    plan = yaml.safe_load(sb.plan.read_text())
    token = sb.token_file.read_text().strip()
    hosts = [plan["registry"]["host"], *plan["registry"]["legacy_hosts"],
             plan["gitea"]["root_url"].split("//", 1)[1].rstrip("/")]
    return guide_registries(hosts, plan["gitea"]["username"], token)


def write_script(text: str) -> str:
    """The guide's Step 5 writer script (quoted heredoc)."""
    return ("mkdir -p /etc/rancher/k3s\n"
            f"cat > {REGISTRIES} << 'EOF'\n{text}EOF\n"
            'echo "Done on $(hostname)"\n')


def unit_enter(v1, node: str, unit: str) -> int:
    phase, code, log = on_node(v1, node, f"systemctl show {unit} -p ActiveEnterTimestampMonotonic --value")
    assert (phase, code) == ("Succeeded", 0), log
    return int(log.strip())


def ready(v1, node: str) -> bool:
    conds = v1.read_node(node).status.conditions
    return any(c.type == "Ready" and c.status == "True" for c in conds)


def lease_time(k8s, node: str) -> datetime:
    lease = client.CoordinationV1Api(k8s).read_namespaced_lease(node, "kube-node-lease")
    return lease.spec.renew_time


@pytest.fixture
def v1(k8s) -> client.CoreV1Api:
    return client.CoreV1Api(k8s)


# ---------------------------------------------------------------------------------------------- registries.yaml
def test_written_registries_yaml_is_not_loaded_until_restart(sandbox, v1):
    text = registries_yaml(sandbox)
    host = yaml.safe_load(sandbox.plan.read_text())["registry"]["host"]
    phase, code, log = on_node(v1, "dellmini3", write_script(text))
    assert (phase, code, log) == ("Succeeded", 0, "Done on dellmini3\n")

    node = state(sandbox)["nodes"]["dellmini3"]
    assert node["files"][REGISTRIES] == text
    assert node["loaded_registries"] is None
    assert not any(p.startswith(f"{CONTAINERD}/certs.d/") for p in node["files"])
    # what a wizard checks on the node itself: the file is there, containerd's config is not
    phase, code, log = on_node(v1, "dellmini3", f"cat {REGISTRIES}; test -e {CONTAINERD}/certs.d/{host}/hosts.toml")
    assert (phase, code) == ("Failed", 1) and log == text
    phase, code, log = on_node(v1, "dellmini3", f"grep -c '{host}' {CONTAINERD}/config.toml")
    assert (code, log) == (1, "0\n")
    # the other nodes were not touched
    assert state(sandbox)["nodes"]["dellmini1"]["files"].get(REGISTRIES) is None


@pytest.mark.parametrize(("node", "unit"), [("dellmini3", "k3s"), ("dellmini2", "k3s-agent")])
def test_restart_is_provable_and_loads_registries(sandbox, v1, node, unit):
    text = registries_yaml(sandbox)
    host = yaml.safe_load(sandbox.plan.read_text())["registry"]["host"]
    assert on_node(v1, node, write_script(text))[:2] == ("Succeeded", 0)
    before = unit_enter(v1, node, unit)
    t0 = time.time()

    phase, code, log = on_node(v1, node, f"systemctl --no-block restart {unit} && echo restarting")
    assert (phase, code, log) == ("Succeeded", 0, "restarting\n")

    # a second pod, as a wizard would poll: the unit's start timestamp moved
    after = poll(lambda: (lambda v: v if v != before else None)(unit_enter(v1, node, unit)), what="new start")
    assert after > before
    phase, code, log = on_node(v1, node, f"systemctl is-active {unit}")
    assert (code, log) == (0, "active\n")

    # containerd's config was regenerated from the file
    phase, code, log = on_node(v1, node, f"cat {CONTAINERD}/certs.d/{host}/hosts.toml")
    assert code == 0, log
    assert f'server = "https://{host}/v2"' in log
    assert "skip_verify = true" in log
    assert f'[host."https://{host}/v2"]' in log
    phase, code, log = on_node(v1, node, f"cat {CONTAINERD}/config.toml")
    assert code == 0 and host in log

    # the kubelet announced itself after the restart
    events = v1.list_namespaced_event(NS, field_selector=f"involvedObject.name={node}").items
    starting = [e for e in events if e.reason == "Starting" and e.message == "Starting kubelet."
                and e.involved_object.kind == "Node"]
    assert starting, [(e.reason, e.message) for e in events]
    assert max(e.last_timestamp for e in starting).timestamp() >= int(t0)

    st = state(sandbox)["nodes"][node]
    assert len(st["restarts"]) == 1
    r = st["restarts"][0]
    assert r["end"] is not None and r["end"] > r["start"] >= t0 - 1
    assert st["loaded_registries"] == text
    assert st["unit_state"] == "active"
    assert poll(lambda: ready(v1, node), what="Ready")


@pytest.mark.parametrize(("script", "out"), [
    ("systemctl show k3s -p ActiveState --value", "active\n"),
    ("systemctl show k3s --property=ActiveState --value", "active\n"),
    ("systemctl show --property ActiveState,SubState k3s", "ActiveState=active\nSubState=running\n"),
    ("systemctl show -p LoadState -p MainPID k3s.service", "LoadState=loaded\nMainPID=1000\n"),
    ("systemctl show -P ActiveState k3s", "active\n"),
    ("systemctl show k3s-agent -p LoadState --value", "not-found\n"),
    ("systemctl is-active --quiet k3s && echo up", "up\n"),
    ("systemctl -q is-active k3s-agent || echo rc=$?", "rc=3\n"),
])
def test_systemctl_show_and_is_active_forms(v1, script, out):
    assert on_node(v1, "dellmini1", script) == ("Succeeded", 0, out)


def test_each_restart_posts_a_new_starting_event(sandbox, v1):
    """A restarted kubelet's event recorder starts empty: a new Event per start, not a count bump."""
    def starting():
        return [e for e in v1.list_namespaced_event(NS, field_selector="involvedObject.name=dellmini5").items
                if e.reason == "Starting" and e.involved_object.name == "dellmini5"]
    assert starting() == []
    for n in (1, 2):
        assert on_node(v1, "dellmini5", "systemctl restart k3s && echo ok")[2] == "ok\n"
        events = poll(lambda n=n: (lambda ev: ev if len(ev) == n else None)(starting()), what=f"{n} events")
    assert len({e.metadata.name for e in events}) == 2
    assert all(e.count == 1 and e.source.component == "kubelet" and e.source.host == "dellmini5" for e in events)
    assert [r["end"] is not None for r in state(sandbox)["nodes"]["dellmini5"]["restarts"]] == [True, True]


def test_wrong_unit_name_on_agent(sandbox, v1):
    phase, code, log = on_node(v1, "dellmini2", "systemctl restart k3s")
    assert (phase, code) == ("Failed", 5)
    assert "Unit k3s.service not found" in log
    assert state(sandbox)["nodes"]["dellmini2"]["restarts"] == []
    phase, code, log = on_node(v1, "dellmini1", "systemctl restart k3s-agent")
    assert code == 5 and "Unit k3s-agent.service not found" in log


def test_restarting_the_api_server_node_refuses_connections(make_sandbox):
    sb = make_sandbox("api-restart", restart_seconds=(1.0, 1.0), readyz_lag_seconds=3.0)
    api = api_client(str(sb.kubeconfig))
    try:
        v1 = client.CoreV1Api(api)
        port = sb.api.port
        assert v1.list_node().items
        body = node_pod("dellmini1", "systemctl --no-block restart k3s && echo restarting")
        v1.create_namespaced_pod(NS, body)

        errors: list[BaseException] = []

        def down():
            try:
                v1.list_node(_request_timeout=2)
            except (urllib3.exceptions.MaxRetryError, urllib3.exceptions.ProtocolError, ConnectionError) as e:
                errors.append(e)
                return True
            return False
        poll(down, timeout=5, what="API down")
        assert isinstance(errors[0], urllib3.exceptions.MaxRetryError)
        assert "refused" in str(errors[0]).lower()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{port}/version", verify=False, timeout=2)
        t_down = time.monotonic()

        def up():
            try:
                return v1.list_node(_request_timeout=2).items
            except urllib3.exceptions.MaxRetryError:
                return None
        poll(up, timeout=10, what="API back")
        assert 0.3 < time.monotonic() - t_down < 3
        assert sb.api.port == port  # same endpoint, same client
        # the port is open before the API is ready (etcd, post-start hooks): /readyz says so, then turns ok
        first = httpx.get(f"https://127.0.0.1:{port}/readyz", verify=False, timeout=2)
        assert first.status_code == 500 and "[-]etcd failed" in first.text and "readyz check failed" in first.text
        assert httpx.get(f"https://127.0.0.1:{port}/livez", verify=False, timeout=2).status_code == 200
        poll(lambda: httpx.get(f"https://127.0.0.1:{port}/readyz", verify=False, timeout=2).status_code == 200,
             timeout=10, what="/readyz ok")
        (window,) = state(sb)["api"]["up_windows"]
        assert window["ready"] - window["up"] == pytest.approx(3.0)
        pod = wait_done(v1, body["metadata"]["name"])
        assert pod.status.phase == "Succeeded"
        assert v1.read_namespaced_pod_log(body["metadata"]["name"], NS) == "restarting\n"
        (r,) = state(sb)["nodes"]["dellmini1"]["restarts"]
        # the new process takes the node's restart time; stopping the old one (closing the API listener)
        # comes before and is as slow as the machine is loaded, so it is measured apart
        assert r["start"] <= r["exit"] and 1.0 - 0.01 <= r["end"] - r["exit"] < 1.6
    finally:
        api.close()


def test_a_pod_spends_its_start_time_in_container_creating_before_it_runs(make_sandbox):
    sb = make_sandbox("slow-pods", pod_start_seconds=(1.0, 1.0))
    api = api_client(str(sb.kubeconfig))
    try:
        v1 = client.CoreV1Api(api)
        body = node_pod("dellmini2", "echo started")
        name = body["metadata"]["name"]
        t0 = time.monotonic()
        v1.create_namespaced_pod(NS, body)
        seen: set[str] = set()

        def creating():
            pod = v1.read_namespaced_pod(name, NS)
            waiting = [c.state.waiting.reason for c in pod.status.container_statuses or [] if c.state.waiting]
            seen.update(waiting)
            return "ContainerCreating" in waiting
        poll(creating, timeout=10, what="ContainerCreating")
        pod = wait_done(v1, name)
        assert time.monotonic() - t0 >= 1.0, "the pod ran before its start time"
        assert pod.status.phase == "Succeeded" and v1.read_namespaced_pod_log(name, NS) == "started\n"
        assert "ContainerCreating" in seen
    finally:
        api.close()


def test_pod_logs_fail_with_k3s_proxy_error_while_the_nodes_kubelet_is_away(make_sandbox):
    sb = make_sandbox("log-gap", restart_seconds=(1.5, 1.5), log_gap_seconds=1.0)
    api = api_client(str(sb.kubeconfig))
    try:
        v1 = client.CoreV1Api(api)
        done = node_pod("dellmini2", "echo kept")
        v1.create_namespaced_pod(NS, done)
        name = done["metadata"]["name"]
        wait_done(v1, name)
        assert v1.read_namespaced_pod_log(name, NS) == "kept\n"
        v1.create_namespaced_pod(NS, node_pod("dellmini2", "systemctl --no-block restart k3s-agent"))
        errors: list[ApiException] = []

        def refused():
            try:
                v1.read_namespaced_pod_log(name, NS)
            except ApiException as e:
                errors.append(e)
                return True
            return False
        poll(refused, timeout=10, what="the log refused while dellmini2's kubelet restarts")
        e = errors[0]
        ip = v1.read_node("dellmini2").status.addresses[0].address
        assert e.status == 500 and "InternalError" in e.body
        assert (f'Get \\"https://{ip}:10250/containerLogs/{NS}/{name}/x\\": proxy error from 127.0.0.1:6443 '
                f"while dialing {ip}:10250, code 502: 502 Bad Gateway") in e.body, e.body
        poll(lambda: not refused(), timeout=15, what="the log back once the kubelet is reachable")
        assert v1.read_namespaced_pod_log(name, NS) == "kept\n"
    finally:
        api.close()


def test_node_that_never_returns(make_sandbox):
    sb = make_sandbox("never", never_returns={"dellmini3"})
    api = api_client(str(sb.kubeconfig))
    try:
        v1 = client.CoreV1Api(api)
        before = lease_time(api, "dellmini3")
        poll(lambda: lease_time(api, "dellmini3") > before, timeout=5, what="heartbeat before restart")
        # the restart and a status check in one script: no new pod can start on the node afterwards
        body = node_pod("dellmini3", "systemctl --no-block restart k3s; sleep 0.5; systemctl is-active k3s; "
                                     "echo rc=$?")
        name = body["metadata"]["name"]
        v1.create_namespaced_pod(NS, body)
        log = poll(lambda: _log_or_none(v1, name), timeout=10, what="script output")
        assert log == "activating\nrc=3\n"

        st = poll(lambda: (lambda s: s if s["restarts"] else None)(state(sb)["nodes"]["dellmini3"]), what="restart")
        assert st["unit_state"] == "activating"
        assert [r["end"] for r in st["restarts"]] == [None]

        stalled = lease_time(api, "dellmini3")
        other = lease_time(api, "dellmini5")
        poll(lambda: lease_time(api, "dellmini5") > other, timeout=5, what="other node heartbeat")
        # a negative check: a stalled kubelet that still renewed would do so within one lease interval (1 s)
        time.sleep(1.5)
        assert lease_time(api, "dellmini3") == stalled
        assert lease_time(api, "dellmini5") > other

        # the kubelet is down: the pod's status never reaches a final phase, a new pod never starts
        assert v1.read_namespaced_pod(name, NS).status.phase in ("Pending", "Running")
        probe = node_pod("dellmini3", "echo hi")
        v1.create_namespaced_pod(NS, probe)
        time.sleep(0.5)  # a negative check: on a live kubelet the probe would be running by then
        assert v1.read_namespaced_pod(probe["metadata"]["name"], NS).status.phase == "Pending"
        assert state(sb)["nodes"]["dellmini3"]["unit_state"] == "activating"
    finally:
        api.close()


def _log_or_none(v1, name: str) -> str | None:
    try:
        return v1.read_namespaced_pod_log(name, NS) or None
    except ApiException:
        return None


# ---------------------------------------------------------------------------------------------- scripts
@pytest.mark.parametrize(("script", "word"), [
    ("apt-get install foo", "apt-get"),
    ("if true; then echo; fi", "if"),
    ("echo before\nfor x in a b; do echo $x; done", "for"),
])
def test_script_outside_the_subset_fails_with_127(v1, script, word):
    phase, code, log = on_node(v1, "dellmini5", script)
    assert (phase, code) == ("Failed", 127)
    assert f"sh: {word}: not found" in log


def test_nsenter_without_host_pid_fails(v1):
    phase, code, log = run_pod(v1, node_pod("dellmini2", "echo hi", host_pid=False))
    assert (phase, code) == ("Failed", 1)
    assert "nsenter" in log and "hi" not in log


def test_nsenter_without_privileged_fails(v1):
    body = node_pod("dellmini2", "echo hi")
    body["spec"]["containers"][0]["securityContext"] = {}
    phase, code, log = run_pod(v1, body)
    assert (phase, code) == ("Failed", 1) and "nsenter" in log


def test_node_script_sees_the_node(v1):
    phase, code, log = on_node(v1, "lenovomini", "hostname; cat /etc/hostname; systemctl is-active k3s-agent")
    assert (phase, code, log) == ("Succeeded", 0, "lenovomini\nlenovomini\nactive\n")


@pytest.mark.parametrize("cmd", ["crictl pull", "k3s crictl pull"])
def test_crictl_pull_before_registries_yaml_fails_on_tls(sandbox, v1, cmd):
    image = yaml.safe_load(sandbox.plan.read_text())["images"][2]["target"] + ":latest"
    phase, code, log = on_node(v1, "dellmini1", f"{cmd} {image}")
    assert (phase, code) == ("Failed", 1)
    assert "x509: certificate signed by unknown authority" in log
    assert f'failed to pull and unpack image \\"{image}\\"' in log or f'"{image}"' in log
    assert "FATA[0000] pulling image: rpc error" in log


def test_crictl_pull_after_restart_with_registries_yaml(sandbox, v1):
    """With skip_verify + credentials on the registry host and the TLS ingress missing: the token 404."""
    image = yaml.safe_load(sandbox.plan.read_text())["images"][2]["target"] + ":latest"
    assert on_node(v1, "dellmini2", write_script(registries_yaml(sandbox)))[1] == 0
    assert on_node(v1, "dellmini2", "systemctl restart k3s-agent && echo ok")[1:] == (0, "ok\n")
    phase, code, log = on_node(v1, "dellmini2", f"crictl pull {image}")
    assert code == 1
    assert "failed to fetch oauth token" in log and "404 Not Found" in log


# ---------------------------------------------------------------------------------------------- heartbeats
def test_node_leases_are_renewed(k8s):
    leases = client.CoordinationV1Api(k8s).list_namespaced_lease("kube-node-lease").items
    assert sorted(lease.metadata.name for lease in leases) == sorted(
        ["dellmini1", "dellmini2", "dellmini3", "dellmini5", "lenovomini"])
    before = {lease.metadata.name: lease.spec.renew_time for lease in leases}
    assert all(lease.spec.holder_identity == lease.metadata.name for lease in leases)

    def all_advanced():
        return all(lease_time(k8s, n) > t for n, t in before.items())
    poll(all_advanced, timeout=5, interval=0.2, what="every lease renewed")
    now = datetime.now(UTC)
    assert all((now - lease_time(k8s, n)).total_seconds() < 3 for n in before)


# ---------------------------------------------------------------------------------------------- --existing-registries
def test_existing_registries_are_loaded_on_every_node(make_sandbox):
    text = 'mirrors:\n  "docker.io":\n    endpoint:\n      - "https://mirror.example.test"\n'
    sb = make_sandbox("existing", existing_registries=text)
    nodes = state(sb)["nodes"]
    assert len(nodes) == 5
    for name, node in nodes.items():
        assert node["loaded_registries"] == text, name
        assert node["files"][REGISTRIES] == text
        assert f"{CONTAINERD}/certs.d/docker.io/hosts.toml" in node["files"]
        assert node["restarts"] == []
    api = api_client(str(sb.kubeconfig))
    try:
        v1 = client.CoreV1Api(api)
        # installed before k3s last started: the file is older than the unit's start
        phase, code, log = on_node(v1, "dellmini2", f"stat -c %Y {REGISTRIES}; date +%s")
        assert code == 0, log
        mtime, now = (int(x) for x in log.split())
        assert now - mtime > 60
    finally:
        api.close()


def test_an_invalid_registries_yaml_keeps_k3s_waiting_at_start_for_ever():
    """As the real k3s: it retries loading its agent configuration for ever, the kubelet never starts."""
    import asyncio

    from sandbox.memfs import MemFS
    from sandbox.nodes import NodeHooks, SimNode, Systemd

    async def go():
        fs = MemFS()
        fs.mkdir("/etc/rancher/k3s", parents=True)
        node = SimNode(name="n1", role="agent", internal_ip="10.0.0.9", fs=fs, boot_time=time.time() - 5000,
                       unit="k3s-agent")
        systemd = Systemd(NodeHooks(), lambda n: 0.1)
        fs.write(REGISTRIES, b"configs:\n  registry.example.test:\n    tls: [unclosed\n")
        task = systemd.restart(node)
        await asyncio.sleep(0.5)  # a negative check: five times the restart's duration, it would be done by now
        stuck = (task.done(), node.state, node.kubelet_up, node.restarts[-1]["kubelet"])
        task.cancel()
        fs.write(REGISTRIES, b"configs: {}\n")  # fixed: the next start loads it
        node.restart_task = None
        await systemd.restart(node)
        return stuck, (node.state, node.kubelet_up)

    stuck, fixed = asyncio.run(go())
    assert stuck == (False, "activating", False, None)
    assert fixed == ("active", True)


@pytest.mark.parametrize(("unit_type", "active_before_kubelet"), [("exec", True), ("notify", False)])
def test_a_type_exec_unit_is_active_before_its_kubelet_starts(unit_type, active_before_kubelet):
    """Older installs gave agents Type=exec: systemd calls the unit active once k3s runs, not at READY=1."""
    import asyncio

    from sandbox.memfs import MemFS
    from sandbox.nodes import NodeHooks, SimNode, Systemd

    seen = {}

    class Hooks(NodeHooks):
        async def kubelet_started(self, node):
            seen["state"], seen["enter"] = node.state, node.active_enter

    async def go():
        fs = MemFS()
        fs.mkdir("/etc/rancher/k3s", parents=True)
        node = SimNode(name="n1", role="agent", internal_ip="10.0.0.9", fs=fs, boot_time=time.time() - 5000,
                       unit="k3s-agent", unit_type=unit_type)
        await Systemd(Hooks(), lambda n: 0.2, kubelet_lead=lambda n, total: 0.1).restart(node)
        return node

    node = asyncio.run(go())
    assert (seen["state"] == "active") is active_before_kubelet
    assert (node.active_enter == node.inactive_exit) is active_before_kubelet
    assert node.state == "active" and node.n_restarts == 1
