"""The migration's stages, in the guide's order (names are the operator's words)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageInfo:
    key: str
    title: str
    guide_step: str  # the section of migration-guide.md it automates


STAGES: tuple[StageInfo, ...] = (
    StageInfo("preflight", "Preflight", "Prerequisites"),
    StageInfo("credentials", "Credentials", "Step 1"),
    StageInfo("secrets", "Registry secrets", "Step 2"),
    StageInfo("proxy", "TLS auth proxy", "Step 3"),
    StageInfo("ingress", "HTTPS ingress", "Step 4"),
    StageInfo("registries", "Node registries", "Step 5"),
    StageInfo("restart", "Rolling restart", "Step 5"),
    StageInfo("workloads", "Workloads", "Step 6"),
    StageInfo("ci", "CI and RBAC", "Steps 7-8"),
    StageInfo("verify", "Verify", "Step 9"),
)
