"""What the screen says is in the operator's words: no Python type names, and look-alike checks say what differs."""

from __future__ import annotations

import re

from screens.modals.authflow import vantage
from wizard.stages.base import Check


async def test_no_stage_overview_shows_an_internal_name(wizard, settle, screen_text):
    app, sb = wizard(audit=True)  # every stage inspected
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        s = app.session
        for i, st in enumerate(s.states):
            for line in st.found or []:
                assert not re.search(r"\b(Scan|WorkflowFile|NoneType|dict|list|tuple)\b", line), (st.title, line)
        workloads = next(st for st in s.states if st.key == "workloads")
        assert any(line.startswith("manifest files: ") for line in workloads.found), workloads.found
        ci = next(st for st in s.states if st.key == "ci")
        assert any(line.startswith("CI workflow") for line in ci.found), ci.found


def test_the_two_pulls_per_node_say_which_is_which():
    node = Check("dellmini1: containerd on the node pulls registry.example.test/a/b:latest", "pass")
    pod = Check("dellmini1: pull-test pod pulls registry.example.test/a/b:latest", "pass")
    assert vantage(node) == "node dellmini1 (containerd)"
    assert vantage(pod) == "a pull-test pod on node dellmini1"
