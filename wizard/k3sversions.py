"""What a k3s release generates from registries.yaml — one table, read by the sandbox's node model and by
the wizard's containerd-config proof alike (../shared/research/upstream-behaviour.md has the sources).

- before v1.26.13 / v1.27.10 / v1.28.6 / v1.29.1 (Feb 2024): no ``certs.d`` for a ``configs``-only host;
  its TLS and auth go into ``config.toml`` (``registry.configs."<host>".tls`` / ``.auth``);
- from those releases: ``certs.d/<host>/hosts.toml`` for every ``configs`` entry with tls or auth
  (``server``, ``capabilities``, ``skip_verify``/``ca`` at the top level, then a ``[host]`` table); the
  auth stays in ``config.toml``'s CRI registry section;
- v1.26.15, v1.27.12, v1.28.8, v1.29.3 write that hosts.toml WITHOUT the ``[host]`` table: containerd
  ignores the file ("invalid host tree"), the TLS settings are lost and pulls fail x509 (k3s#9839, fixed
  in 1.27.13 / 1.28.9 / 1.29.4 by k3s#9853; 1.26 had no later release);
- containerd 2.x (k3s v1.31.6, v1.32.2 and every later release, k3s#11375) names the CRI registry section
  ``io.containerd.cri.v1.images``; containerd 1.x: ``io.containerd.grpc.v1.cri``.

It also holds the one Kubernetes-version fact the node model needs: the node-monitor grace period.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_GRAMMAR = re.compile(r"v1\.(\d{1,2})\.(\d{1,3})\+k3s(\d{1,2})")
# the first release of each minor that writes certs.d for configs-only hosts (later minors always do)
_CERTS_D_FROM = {26: 13, 27: 10, 28: 6, 29: 1}
BROKEN = {(26, 15), (27, 12), (28, 8), (29, 3)}  # hosts.toml without a [host] table
FIXED_IN = {26: None, 27: "v1.27.13+k3s1", 28: "v1.28.9+k3s1", 29: "v1.29.4+k3s1"}
_CONTAINERD2_FROM = {31: 6, 32: 2}  # and every minor from 33
CRI_V1 = "io.containerd.grpc.v1.cri"
CRI_V2 = "io.containerd.cri.v1.images"
CURRENT = "v1.33.5+k3s1"


@dataclass(frozen=True, order=True)
class K3sVersion:
    minor: int
    patch: int
    build: int

    @property
    def text(self) -> str:
        return f"v1.{self.minor}.{self.patch}+k3s{self.build}"

    def __str__(self) -> str:
        return self.text

    @property
    def certs_d(self) -> bool:
        """A ``configs``-only host gets a certs.d/<host>/hosts.toml (else: TLS and auth in config.toml)."""
        if self.minor >= 30:
            return True
        return self.minor in _CERTS_D_FROM and self.patch >= _CERTS_D_FROM[self.minor]

    @property
    def broken_hosts_toml(self) -> bool:
        """This release writes hosts.toml without a [host] table (containerd ignores the file)."""
        return (self.minor, self.patch) in BROKEN

    @property
    def containerd2(self) -> bool:
        return self.minor >= 33 or (self.minor in _CONTAINERD2_FROM and self.patch >= _CONTAINERD2_FROM[self.minor])

    @property
    def cri_section(self) -> str:
        """The config.toml plugin whose ``registry`` section holds the auth (and, before certs.d, the TLS)."""
        return CRI_V2 if self.containerd2 else CRI_V1

    @property
    def containerd(self) -> str:
        """The containerd k3s bundles (as the Node's containerRuntimeVersion reports it), by generation."""
        return "2.1.4-k3s1" if self.containerd2 else "1.7.11-k3s2" if self.certs_d else "1.7.7-k3s1"

    @property
    def node_monitor_grace(self) -> float:
        """Seconds without a Lease renewal before the node lifecycle controller sets Ready Unknown: 40, and 50
        from Kubernetes 1.32 (kubernetes#126287). A restart shorter than this may show no NotReady at all."""
        return 50.0 if self.minor >= 32 else 40.0

    @property
    def fixed_in(self) -> str | None:
        """The first release of this minor that writes hosts.toml correctly again (None: no later release)."""
        return FIXED_IN.get(self.minor) if self.broken_hosts_toml else None


def parse(text: str | None) -> K3sVersion | None:
    """``v1.29.3+k3s1`` → K3sVersion; None for anything else (a Node that is not k3s, a typo)."""
    m = _GRAMMAR.fullmatch((text or "").strip())
    return K3sVersion(int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None
