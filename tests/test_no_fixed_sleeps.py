"""No Pilot test waits a fixed time to decide what it asserts: ``pilot.pause(0.2)`` then an assertion passes on
an idle machine and fails on a loaded one. A test waits for the state it asserts instead (``helpers.until``,
or the UI conftest's ``settle``/``steady``). Read from the test sources, every call, also inside helpers."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# "file:line" of a numeric pause that must stay, with the reason (none today: keep it that way)
ALLOWED: dict[str, str] = {}


def fixed_pauses(source: str, name: str = "<test>") -> list[int]:
    """Lines of ``<anything>.pause(<number>)`` (or ``delay=<number>``) calls: a Pilot's pause for a fixed time."""
    lines = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "pause":
            args = [*node.args, *(k.value for k in node.keywords if k.arg == "delay")]
            if any(isinstance(a, ast.Constant) and isinstance(a.value, int | float) and not isinstance(a.value, bool)
                   for a in args):
                lines.append(node.lineno)
    return lines


def test_the_check_finds_a_fixed_pause_in_any_form():
    src = ("async def t(pilot):\n    await pilot.pause(0.2)\n    await pilot.pause(delay=1)\n"
           "    await pilot.pause()\n    await pilot.pause(gap)\n    await self.pilot.pause(0.05)\n")
    assert fixed_pauses(src) == [2, 3, 6]


def test_no_test_waits_on_a_fixed_pilot_pause():
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        rel = str(path.relative_to(TESTS))
        found += [f"{rel}:{line}" for line in fixed_pauses(path.read_text(), rel) if f"{rel}:{line}" not in ALLOWED]
    assert found == [], ("a fixed pilot.pause decides what follows: wait for the state instead "
                         f"(await helpers.until(pilot, cond, what=...)): {found}")
