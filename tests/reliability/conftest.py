"""Collects what each fault/bad-input scenario did, and renders docs/reliability.md from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


class Recorder:
    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def record(self, kind: str, scenario: str, outcome: str) -> None:
        self.rows.append((kind, scenario, outcome))

    def markdown(self) -> str:
        lines = ["# Reliability", "",
                 "Produced by the test suite (`GHCR2GITEA_WRITE_RELIABILITY=1 pytest tests/reliability "
                 "tests/stages/test_inputs.py`), from what each scenario actually did on the sandbox — not written "
                 "by hand.", "", "| Fault | Scenario | Observed outcome |", "|---|---|---|"]
        for kind, scenario, outcome in self.rows:
            lines.append(f"| {kind} | {scenario} | {outcome} |")
        return "\n".join(lines) + "\n"


_RECORDER = Recorder()


@pytest.fixture(scope="session")
def reliability() -> Recorder:
    return _RECORDER


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("GHCR2GITEA_WRITE_RELIABILITY") and _RECORDER.rows and exitstatus == 0:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(_RECORDER.markdown())
