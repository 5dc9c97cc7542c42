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
        for st in s.states:
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


async def test_a_long_cause_is_cut_at_a_word_with_the_whole_text_in_the_detail_pane(wizard, settle, screen_text):
    from wizard.credentials import Secret
    for size in ((80, 24), (120, 36)):
        app, sb = wizard()
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            app.session.ctx.token = Secret("a-wrong-token-" + "x" * 20)
            await pilot.press("n")
            await settle(pilot)
            table = app.query_one("#checks")
            check = app.query_one("#checks-view").highlighted
            assert check is not None and check.status == "fail" and len(check.cause) > 60
            assert table.virtual_size.width <= table.scrollable_content_region.width + 1, size  # no sideways cut
            widths = [c.get_render_width(table) for c in table.columns.values()]
            assert min(widths) >= 12, widths  # no column squeezed to a few characters
            cell = str(table.get_cell_at((0, 2)))
            assert cell.endswith("…") and app.shown(check.cause).startswith(cell[:-1].rstrip())
            kept = cell[:-1].rstrip()
            # a whole word before the '…' — unless one word alone (a URL) is wider than the column
            assert kept.split()[-1] in app.shown(check.cause).split() or " " not in kept, cell
            detail = " ".join(str(app.query_one("#check-detail").render()).split())
            assert " ".join(app.shown(check.cause).split()) in detail


async def test_a_stage_note_wraps_under_its_title_never_back_to_the_lists_edge(screen_text):
    from helpers import until
    from textual.app import App

    from screens.widgets.stage_list import StageList
    from wizard.stages import STAGES

    class Stages(App):
        CSS_PATH = "../../screens/app.tcss"
        HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

        def compose(self):
            yield StageList([s.title for s in STAGES], id="stages")

    for size in ((80, 24), (120, 36)):
        app = Stages()
        async with app.run_test(size=size) as pilot:
            stages = app.query_one(StageList)
            stages.set_state(2, "overridden", note="overridden (2)")
            stages.set_state(7, "paused", note="paused — Apply resumes")
            await until(pilot, lambda a=app: "paused" in screen_text(a), what=f"the notes drawn at {size}")
            rows = [line.split("│")[1] for line in screen_text(app).splitlines() if line.startswith("│")]
            assert [r.strip() for r in rows if r.startswith("     ")][:3] == ["overridden (2)", "paused — Apply",
                                                                          "resumes"], (size, rows)
            for row in rows:  # every line is a stage (its mark first) or a note under one, or empty
                assert row[0] in "·⚠‖▶✓✗○" or not row[:5].strip(), (size, rows)
