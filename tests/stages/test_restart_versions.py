"""The restart is proven on every systemd version and node time zone, and on k3s's real start-up order.

systemd before 247 refuses ``systemctl --timestamp=``, and its default output is the node's local
time; a server's kubelet posts ``Starting`` and renews its Lease long before k3s signals READY. The
wizard reads systemd's monotonic stamps with the node's own clock pair, so every profile gives the
same result: every node restarted once, each proven, and an audit that finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import time
import types

import pytest
from helpers import migrate_then_audit_clean, run_cli, sandbox_state

from sandbox.cluster import Options
from sandbox.kubelet import node_proc
from sandbox.memfs import MemFS
from sandbox.nodes import NodeHooks, SimNode, Systemd
from sandbox.shell import ShellContext, run_script
from wizard import registries as R

NO_HOSTS = types.SimpleNamespace(node_hosts=())
PROFILES = [
    pytest.param(dict(systemd_version=252, node_timezone="UTC"), id="systemd252-UTC"),
    pytest.param(dict(systemd_version=245, node_timezone="Asia/Tokyo"), id="systemd245-Tokyo"),
    pytest.param(dict(systemd_version=245, node_timezone="America/Phoenix"), id="systemd245-Phoenix"),
    pytest.param(dict(systemd_version=252, node_timezone="Asia/Tokyo"), id="systemd252-Tokyo"),
    pytest.param(dict(systemd_version=245, node_timezone="UTC"), id="systemd245-UTC"),
    # the realistic start-up order: a server's kubelet starts seconds before READY (etcd, the API server)
    pytest.param(dict(systemd_version=252, node_timezone="America/Phoenix", servers=1, agents=1,
                      server_restart_seconds=(4.0, 4.0)), id="server-ready-4s-after-kubelet"),
    # older installs gave agents Type=exec: the unit is active as soon as k3s runs, before its kubelet
    pytest.param(dict(systemd_version=245, node_timezone="Asia/Tokyo", agent_unit_type="exec",
                      restart_seconds=(1.0, 1.5)), id="agents-Type=exec"),
    # a real cluster's timeline (--realistic, shortened): pods take time to start, /readyz lags the API port,
    # and pods/log answers 500 while a node's kubelet is away — the wizard waits and retries through all three
    pytest.param(dict(pod_start_seconds=(0.3, 0.8), readyz_lag_seconds=1.0, log_gap_seconds=0.5,
                      server_restart_seconds=(2.0, 3.0)), id="realistic-timeline"),
]


@pytest.mark.parametrize("profile", PROFILES)
def test_apply_then_audit_proves_every_restart(make_sandbox, profile):
    migrate_then_audit_clean(make_sandbox(**{"servers": 2, "agents": 1, **profile}))


def test_no_server_goes_down_while_the_api_answers_not_ready(make_sandbox):
    """The API node's k3s opens its port seconds before /readyz is ok (etcd, post-start hooks): the quorum
    guard waits for /readyz, so the next server goes down only once the API is ready again."""
    sb = make_sandbox(servers=2, agents=0, restart_seconds=(0.3, 0.3), readyz_lag_seconds=3.0)
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    state = sandbox_state(sb)
    (window,) = state["api"]["up_windows"]  # dellmini1 (the API node) goes first and comes back once
    (later,) = [r["start"] for n in state["nodes"].values() for r in n["restarts"] if r["start"] > window["up"]]
    assert later >= window["ready"], f"a server went down {window['ready'] - later:.1f} s before /readyz was ok"
    assert "server2: waiting: the API not ready (quorum guard)" in res.stdout, res.stdout


@pytest.mark.parametrize(("version", "grace"), [("v1.31.9+k3s1", 40.0), ("v1.32.5+k3s1", 50.0),
                                                ("v1.33.5+k3s1", 50.0)])
def test_ready_turns_unknown_after_the_grace_period_of_the_kubernetes_version(version, grace):
    from sandbox.cluster import NODE, Cluster
    cl = Cluster(Options(servers=1, agents=1, k3s_version=version))
    cl.build()
    for node in cl.nodes.values():  # both kubelets stopped at the same moment (k3s going down)
        node.kubelet_up, node.last_lease = False, 1_800_000_000.0
    assert cl.mark_unknown(1_800_000_000.0 + grace - 1) == []  # a restart shorter than the grace: no NotReady
    assert cl.mark_unknown(1_800_000_000.0 + grace + 1) == list(cl.nodes)
    ready = [c for c in cl.store.get(NODE, "", "dellmini1")["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "Unknown" and ready[0]["reason"] == "NodeStatusUnknown"
    assert cl.mark_unknown(1_800_000_000.0 + grace + 2) == []  # once


def _probe(zone: str, version: int, *, mtime_offset: float) -> tuple[R.NodeFacts, SimNode]:
    """The facts script on one simulated node that has just restarted (its kubelet started before READY)."""
    async def go():
        fs = MemFS()
        fs.mkdir("/etc/rancher/k3s", parents=True)
        fs.write("/etc/timezone", (zone + "\n").encode())
        node = SimNode(name="n1", role="server", internal_ip="10.0.0.1", fs=fs, boot_time=time.time() - 5000,
                       timezone=zone, systemd_version=version)
        systemd = Systemd(NodeHooks(), lambda n: 0.4, kubelet_lead=lambda n, total: 0.3)
        await systemd.restart(node)
        fs.write(R.PATH, b"mirrors: {}\n")
        fs._files[R.PATH].mtime = node.inactive_exit + mtime_offset

        async def systemctl(argv, stdin, ctx):
            return await systemd.command(node, argv)
        ctx = ShellContext(fs=fs, hostname="n1", env={}, commands={"systemctl": systemctl}, proc=node_proc(node))
        res = await run_script(R.facts_script(NO_HOSTS), ctx)
        assert res.rc == 0, res.stdout + res.stderr
        return R.parse_facts("n1", res.stdout, NO_HOSTS), node
    return asyncio.run(go())


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo", "America/Phoenix"])
@pytest.mark.parametrize("version", [245, 252])
def test_facts_give_the_node_start_in_epoch_seconds(zone, version):
    facts, node = _probe(zone, version, mtime_offset=-30)
    # the process start, bracketed within a few hundredths of a second, whatever the zone or version
    assert facts.started_after <= node.inactive_exit <= facts.started_by
    assert facts.started_by - facts.started_after < 0.1
    assert abs(facts.active_enter - node.active_enter) < 0.1
    assert facts.restart_reason(NO_HOSTS) is None  # written 30 s before the start: loaded
    later, _ = _probe(zone, version, mtime_offset=+0.5)
    assert later.restart_reason(NO_HOSTS) == "registries.yaml changed after k3s last started"


def test_old_systemd_refuses_the_timestamp_option_and_prints_local_time():
    async def go():
        node = SimNode(name="n1", role="server", internal_ip="10.0.0.1", fs=MemFS(), boot_time=1_700_000_000.0,
                       timezone="Asia/Tokyo", systemd_version=245, active_enter=1_700_000_100.0)
        systemd = Systemd(NodeHooks(), lambda n: 0.0)
        old = await systemd.command(node, ["systemctl", "show", "k3s", "-p", "ActiveEnterTimestamp", "--value",
                                           "--timestamp=us+utc"])
        local = await systemd.command(node, ["systemctl", "show", "k3s", "-p", "ActiveEnterTimestamp", "--value"])
        mono = await systemd.command(node, ["systemctl", "show", "k3s", "-p", "ActiveEnterTimestampMonotonic",
                                            "--value"])
        return old, local, mono
    old, local, mono = asyncio.run(go())
    assert old == (1, b"", b"systemctl: unrecognized option '--timestamp=us+utc'\n")
    assert local[1] == b"Wed 2023-11-15 07:15:00 JST\n"  # 22:15 UTC
    assert mono[1] == b"100000000\n"


def test_sandbox_defaults_keep_fast_restarts_and_the_current_systemd():
    o = Options()
    assert (o.systemd_version, o.node_timezone, o.server_restart_seconds) == (252, "UTC", None)


def test_a_whole_second_event_stamp_counts_from_the_start_s_second():
    from wizard.restart import written_after
    start = 1_795_700_703.6  # the kubelet posted Starting at .9 of the same second; lastTimestamp drops it
    assert written_after("2026-11-26T13:45:03Z", start)
    assert not written_after("2026-11-26T13:45:02Z", start)
    assert not written_after("2026-11-26T13:45:03.500000Z", start)  # µs stamps (renewTime, eventTime) exactly


def test_a_date_without_nanoseconds_widens_the_clock_pair_to_a_second():
    assert R.clock_offset("1000.25", "100.50 7.00", "1000.26") == pytest.approx((899.74, 899.76))
    assert R.clock_offset("1000.%N", "100.50 7.00", "1000.%N") == pytest.approx((899.49, 900.5))
    assert R.clock_offset("1000.2", "", "1000.3") is None
