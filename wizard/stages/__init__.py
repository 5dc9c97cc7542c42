"""The migration's stages, in the guide's order (names are the operator's words): one module per stage."""

from __future__ import annotations

from .auth_proxy import AuthProxy
from .base import Stage
from .ci_rbac import CiRbac
from .credentials import Credentials
from .https_ingress import HttpsIngress
from .images import Images
from .node_registries import NodeRegistries
from .preflight import Preflight
from .registry_secrets import RegistrySecrets
from .rolling_restart import RollingRestartStage
from .verify import Verify
from .workloads import Workloads

STAGES: tuple[Stage, ...] = (Preflight(), Credentials(), RegistrySecrets(), Images(), AuthProxy(), HttpsIngress(),
                             NodeRegistries(), RollingRestartStage(), Workloads(), CiRbac(), Verify())
BY_KEY = {s.key: s for s in STAGES}
