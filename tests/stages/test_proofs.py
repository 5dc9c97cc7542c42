"""Each guard and proof of the rolling restart on its own: a name, and check() -> (ok, why), against a real
(sandbox) API server. The rollout runs them in order (tests/stages/test_restart.py proves the whole loop)."""

from __future__ import annotations

import time

import pytest

from wizard import proofs as P
from wizard.cluster import Cluster, ClusterReader
from wizard.registries import NodeFacts
from wizard.restart import PROOFS as PROOF_NAMES

SERVER, OTHER_SERVER, AGENT = "dellmini1", "dellmini3", "dellmini2"


@pytest.fixture
def cluster(sandbox):
    c = ClusterReader.connect(str(sandbox.kubeconfig), patience=10)
    yield c
    c.close()


def facts(**kw) -> NodeFacts:
    base = dict(node=AGENT, unit="k3s-agent", active=True, active_enter=100.0, active_enter_mono=5_000_000,
                text=None, mtime=None, loaded_hosts={"git.example.test": "server = ...", "realm.example.test": "x"},
                started_after=time.time() - 3600)
    return NodeFacts(**{**base, **kw})


def test_every_guard_and_proof_has_a_distinct_name_and_the_rollout_reports_them():
    names = [g.name for g in P.GUARDS] + [p.name for p in P.PROOFS]
    assert all(names) and len(set(names)) == len(names)
    assert ("restart started", *(p.name for p in P.PROOFS)) == PROOF_NAMES


def test_node_exists(cluster):
    g = P.NodeExists(cluster)
    assert g.check(P.Candidate(AGENT, "agent")) == (True, f"node {AGENT} is in the cluster")
    ok, why = g.check(P.Candidate("gone-node", "agent"))
    assert not ok and why == "node gone-node is no longer in the cluster"
    assert g.wait is False  # waiting does not bring a deleted node back


def test_quorum_lets_an_agent_go_and_a_server_only_while_the_others_are_ready(cluster, sandbox):
    q = P.Quorum(cluster)
    assert q.check(P.Candidate(AGENT, "agent"))[0]
    ok, why = q.check(P.Candidate(SERVER, "server"))
    assert ok, why
    # another server turns NotReady: the first may not go down now
    writer = Cluster.connect(str(sandbox.kubeconfig), patience=10)
    try:
        node = writer.get("Node", OTHER_SERVER)
        conditions = [dict(c, status="False", reason="KubeletNotReady") if c["type"] == "Ready" else c
                      for c in node["status"]["conditions"]]
        writer.request("PATCH", f"/api/v1/nodes/{OTHER_SERVER}/status", body={"status": {"conditions": conditions}},
                       content_type="application/strategic-merge-patch+json", fence=False)
    finally:
        writer.close()
    ok, why = q.check(P.Candidate(SERVER, "server"))
    assert not ok and why == f"{OTHER_SERVER} not ready"


def test_unit_restarted_needs_an_active_unit_with_a_new_start():
    p = P.UnitRestarted()
    assert p.check(P.Restarted(AGENT, "k3s-agent", 4_000_000, facts()))[0]
    ok, why = p.check(P.Restarted(AGENT, "k3s-agent", 5_000_000, facts()))
    assert not ok and "start timestamp it had before" in why
    assert not p.check(P.Restarted(AGENT, "k3s-agent", 4_000_000, facts(active=False)))[0]
    assert p.check(P.Restarted(AGENT, "k3s-agent", 4_000_000, None)) == (False, "no probe of the node answered yet")


def post_starting_event(sandbox, node: str) -> None:
    """What a kubelet posts when it starts (the sandbox's kubelets post it only when their k3s restarts)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    writer = Cluster.connect(str(sandbox.kubeconfig), patience=10)
    try:
        writer.request("POST", "/api/v1/namespaces/default/events", content_type="application/json", fence=False,
                       body={"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{node}.starting"},
                             "involvedObject": {"kind": "Node", "name": node, "uid": node},
                             "reason": "Starting", "message": "Starting kubelet.", "type": "Normal",
                             "source": {"component": "kubelet", "host": node},
                             "firstTimestamp": now, "lastTimestamp": now, "count": 1})
    finally:
        writer.close()


def test_heartbeat_and_starting_event_count_only_what_the_new_kubelet_wrote(cluster, sandbox):
    post_starting_event(sandbox, AGENT)
    long_ago = P.Restarted(AGENT, "k3s-agent", None, facts(started_after=time.time() - 3600))
    not_yet = P.Restarted(AGENT, "k3s-agent", None, facts(started_after=time.time() + 3600))
    unknown = P.Restarted(AGENT, "k3s-agent", None, facts(started_after=None))
    beat, event = P.Heartbeat(cluster), P.StartingEvent(cluster)
    assert beat.check(long_ago)[0], beat.check(long_ago)
    ok, why = beat.check(not_yet)
    assert not ok and "before the restart" in why
    assert event.check(long_ago)[0], event.check(long_ago)
    ok, why = event.check(not_yet)
    assert not ok and why == f"no Starting event for {AGENT} since the restart (1 older)"
    assert beat.check(unknown) == event.check(unknown) == (False, "the node's start time is unknown")


def test_ready(cluster):
    assert P.Ready(cluster).check(P.Restarted(AGENT, "k3s-agent", None)) == (True, "Ready=True")
    assert not P.Ready(cluster).check(P.Restarted("gone-node", "k3s-agent", None))[0]


def test_containerd_config_names_the_hosts_it_lacks_and_is_not_waited_for():
    p = P.ContainerdConfig()
    assert p.check(P.Restarted(AGENT, "k3s-agent", None, facts()))[0]
    ok, why = p.check(P.Restarted(AGENT, "k3s-agent", None, facts(loaded_hosts={"git.example.test": "",
                                                                               "realm.example.test": "x"})))
    assert not ok and why == "containerd has no config for git.example.test"
    assert p.final  # read once from the probe: a k3s that did not load the file will not load it by waiting
