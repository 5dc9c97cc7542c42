"""The migration's stages, in the guide's order (names are the operator's words)."""

from __future__ import annotations

from .base import Stage
from .images import Images
from .nodes import NodeRegistries, RollingRestartStage
from .preflight import Preflight
from .proxy_ingress import AuthProxy, HttpsIngress
from .registry_access import Credentials, RegistrySecrets
from .workloads import CiRbac, Verify, Workloads

STAGES: tuple[Stage, ...] = (Preflight(), Credentials(), RegistrySecrets(), Images(), AuthProxy(), HttpsIngress(),
                             NodeRegistries(), RollingRestartStage(), Workloads(), CiRbac(), Verify())
BY_KEY = {s.key: s for s in STAGES}
