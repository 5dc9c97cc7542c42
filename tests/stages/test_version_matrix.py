"""The version matrix: k3s × systemd × node time zone × Gitea, as operators run them — not the full product,
but every value of each and the pairs most likely to break (issue 15's acceptance).

- k3s: before Feb 2024 (TLS in config.toml, no certs.d), the 1.29.3 era (a hosts.toml containerd ignores), and
  current (containerd 2, the ``io.containerd.cri.v1.images`` section);
- systemd 245 (no ``--timestamp=``, local-time output) and 252;
- node time zone UTC, UTC+9 (Asia/Tokyo) and UTC−7 (America/Phoenix, no DST);
- Gitea up to 1.22.0 (the realm is ROOT_URL) and from 1.22.1 (the realm follows the request: plain HTTP behind
  the guide's Caddy → Traefik ``web`` path).

Each good profile migrates with ``apply --yes`` and then audits clean; the broken k3s release stops the rollout
at its first node with the diagnosis; Gitea ≥ 1.22.1 stops the run naming the plain-HTTP realm, before any
Secret or pod is written.
"""

from __future__ import annotations

import pytest
from helpers import migrate_then_audit_clean, mutating_requests, run_cli, sandbox_state

PRE_2024, BROKEN, CURRENT = "v1.25.16+k3s4", "v1.29.3+k3s1", "v1.33.5+k3s1"
TOKYO, PHOENIX = "Asia/Tokyo", "America/Phoenix"


def profile(k3s: str, systemd: int, tz: str, gitea: str) -> pytest.param:
    return pytest.param(dict(k3s_version=k3s, systemd_version=systemd, node_timezone=tz, gitea_version=gitea),
                        id=f"k3s{k3s.split('+')[0]}-systemd{systemd}-{tz.split('/')[-1]}-gitea{gitea}")


GOOD = [  # each value of each axis at least once; old systemd with both far time zones on both good k3s
    profile(PRE_2024, 245, TOKYO, "1.22.0"),
    profile(PRE_2024, 252, PHOENIX, "1.22.0"),
    profile(CURRENT, 245, PHOENIX, "1.22.0"),
    profile(CURRENT, 252, "UTC", "1.22.0"),
]


@pytest.mark.parametrize("options", GOOD)
def test_a_good_profile_migrates_and_then_audits_clean(make_sandbox, options):
    migrate_then_audit_clean(make_sandbox(servers=2, agents=1, restart_seconds=(0.3, 0.5), **options), "30")


@pytest.mark.parametrize("options", [profile(BROKEN, 245, TOKYO, "1.22.0"), profile(BROKEN, 252, PHOENIX, "1.22.0")])
def test_the_1_29_3_era_stops_at_the_first_node_with_the_diagnosis_whatever_the_clock(make_sandbox, options):
    sb = make_sandbox(servers=2, agents=1, restart_seconds=(0.3, 0.5), **options)
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "30")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Rolling restart: FAILED" in res.stdout and "has no [host] table" in res.stdout, res.stdout
    assert "upgrade k3s to v1.27.13, v1.28.9, v1.29.4" in res.stdout
    counts = {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()}
    assert counts == {"dellmini1": 1, "server2": 0, "agent1": 0}


@pytest.mark.parametrize("options", [profile(PRE_2024, 245, PHOENIX, "1.22.1"), profile(CURRENT, 252, TOKYO, "1.26.0")])
def test_gitea_from_1_22_1_behind_the_plain_http_path_stops_naming_the_realm(make_sandbox, options):
    sb = make_sandbox(servers=1, agents=1, restart_seconds=(0.3, 0.5), **options)
    before = mutating_requests(sb)
    res = run_cli(sb, "apply", "--plan", str(sb.plan), "--yes", "--node-timeout", "30")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "realm" in out and "http://registry." in out, out
    written = [m for m in mutating_requests(sb)[len(before):] if "/secrets" in m or "/pods" in m]
    assert not written, written
    assert {n: len(v["restarts"]) for n, v in sandbox_state(sb)["nodes"].items()} == {"dellmini1": 0, "agent1": 0}
