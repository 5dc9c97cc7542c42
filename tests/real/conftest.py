"""The real stack: Debian's docker-registry, a Gitea-like token issuer, nginx, dnsmasq and skopeo.

Loopback only; hostnames under ``.test`` are mapped explicitly (a private hosts file for skopeo,
``--resolve`` for the wizard's probe, dnsmasq for nginx) and never looked up in DNS. Locally a
missing binary skips; under CI=true it fails (``helpers.require_binary``).
"""

from __future__ import annotations

import os

import pytest
from helpers import IN_CI, require_binary
from real.stack import Binaries, Stack


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/real/" in str(item.fspath):
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session")
def real_binaries() -> Binaries:
    bins = Binaries(registry=require_binary("docker-registry"), nginx=require_binary("nginx"),
                    skopeo=require_binary("skopeo"), dnsmasq=require_binary("dnsmasq"),
                    unshare=require_binary("unshare"))
    if os.geteuid() != 0:
        # skopeo's private hosts file needs a mount namespace of its own (unshare -m, as root)
        msg = "the real-stack tests run skopeo in `unshare -m` with a private /etc/hosts: run them as root"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return bins


@pytest.fixture
def real_stack(real_binaries):
    """``real_stack(**options)`` starts a Stack; every process it started is stopped by PID afterwards."""
    started: list[Stack] = []

    def make(*, seed: bool = True, **options) -> Stack:
        st = Stack(real_binaries, **options)
        started.append(st)
        st.start()
        if seed:
            res = st.skopeo_copy("registry-user", st.tokens["registry-user"])
            assert res.ok or options, f"seeding the image failed: {res.stderr}"
        return st

    yield make
    for st in started:
        st.stop()
    for st in started:
        for name, proc in st.procs.items():
            assert proc.poll() is not None, f"{name} (pid {proc.pid}) still running after stop"


@pytest.fixture
def registry_pair(real_binaries):
    """A started ``RegistryPair`` (source and target registries, a quirk proxy before each); stopped after."""
    from real.stack import RegistryPair
    pair = RegistryPair(real_binaries).start()
    yield pair
    pair.stop()
    for st in (pair.source, pair.target):
        for name, proc in st.procs.items():
            assert proc.poll() is not None, f"{name} (pid {proc.pid}) still running after stop"


@pytest.fixture(scope="module")
def real_plane(tmp_path_factory):
    """etcd + a real kube-apiserver on loopback (no controller-manager), one per test module."""
    from helpers import require_components

    from sandbox import realapi
    require_components("etcd", "kube-apiserver")
    cp = realapi.RealControlPlane(tmp_path_factory.mktemp("real-api"), controller_manager=False).start(timeout=120)
    yield cp
    cp.wipe()
