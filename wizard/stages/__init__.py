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


def _words(text: str) -> str:
    return " ".join(text.split()).lower()


def names(text: str, key: str, title: str) -> bool:
    """Whether ``text`` names the stage: its key or its title, case and extra blanks aside."""
    words = _words(text)
    return bool(words) and words in (key.lower(), _words(title))


def stage_named(text: str, stages: tuple[Stage, ...] = STAGES) -> Stage:
    """The stage ``text`` names (its key or title, as ``names``); ValueError in one line listing them all."""
    for st in stages:
        if names(text, st.key, st.title):
            return st
    raise ValueError(f"{text!r} is not a stage key or title; the stages: "
                     + ", ".join(f"{st.key} ({st.title})" for st in stages))
