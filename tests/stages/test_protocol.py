"""The stage protocol's values are typed: each stage's inspect() returns its own frozen Observation, which its
plan() reads by field and the faces show field by field; the run's shared facts are typed fields too."""

from __future__ import annotations

import dataclasses

import pytest

from wizard import plan as P
from wizard.cluster import Cluster
from wizard.session import describe_observed
from wizard.stages import STAGES
from wizard.stages.base import Context, Observation, RunCache


def test_every_stage_inspects_into_a_frozen_observation_the_screen_can_read(sandbox):
    plan = P.load(sandbox.plan)
    cluster = Cluster.connect(str(sandbox.kubeconfig))
    try:
        ctx = Context(plan=plan, cluster=cluster, token=None, node_timeout=30)
        kinds = {}
        for st in STAGES:
            seen = st.inspect(ctx)
            assert isinstance(seen, Observation) and dataclasses.is_dataclass(seen), st.key
            if seen.items():
                name, _ = seen.items()[0]
                with pytest.raises(dataclasses.FrozenInstanceError):
                    setattr(seen, name, None)
            kinds[st.key] = type(seen).__name__
            lines = describe_observed(seen, ctx)
            assert lines and not any("inspected" in line or "object at 0x" in line for line in lines), (st.key, lines)
            internal = ("lookup:", "pins:", "immutable:", "facts:")  # field names are not words for the screen
            assert not any(line.startswith(internal) for line in lines), (st.key, lines)
            st.plan(ctx, seen)  # each plan() takes what its own inspect() returned
        # the stages that look at something each say what, in a type of their own
        assert kinds["preflight"] == "PreflightSeen" and kinds["restart"] == "RestartSeen"
        assert kinds["registries"] == "NodeFactsSeen" and kinds["workloads"] == "WorkloadsSeen"
        assert kinds["ci"] == "CiSeen" and kinds["secrets"] == "Objects"
        assert ctx.cache.nodes and ctx.cache.node_facts and ctx.cache.coredns_read
    finally:
        cluster.close()


def test_a_stage_given_a_dict_fails_loudly_not_silently():
    """plan() reads fields: an untyped dict (the old protocol) is an error at once, not an empty plan."""
    from wizard.stages.rolling_restart import RollingRestartStage
    with pytest.raises(AttributeError):
        RollingRestartStage().plan(None, {"facts": {}, "nodes": []})


def test_the_run_cache_has_no_string_keys():
    cache = RunCache()
    with pytest.raises(TypeError):
        cache["node_facts"]  # noqa: B018 — the old string-keyed use is gone
    assert {f.name for f in dataclasses.fields(cache)} >= {"nodes", "node_facts", "proxy_cert", "images_report"}
