"""The wizard's start-up, outside the UI: the token, the plan, the session and the live panel's connection.

``ghcr2gitea.cli`` (the composition root) calls ``wizard_start`` with the parsed arguments and hands the typed
result to the app (``screens.app.run_app``); the screens never read argparse fields, load a token or
connect to a cluster themselves.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .session import Session


@dataclass(frozen=True)
class WizardStart:
    """Everything the app needs to open: the session (None without a plan) and how to reach the cluster."""

    session: Session | None
    api_factory: Callable  # a new kubernetes ApiClient for the live panel's watches
    subtitle: str
    resume_command: str  # what to run again to resume (printed after quitting mid-apply)
    audit: bool = False


def api_factory(kubeconfig: str | None, context: str | None) -> Callable:
    from .kube import api_client
    return lambda: api_client(kubeconfig, context)


def command_line() -> str:
    """The command as typed, to run again (no secret is ever an argument: the token comes from a file or env)."""
    return " ".join(["ghcr2gitea", *map(shlex.quote, sys.argv[1:])])


def _err(msg: str) -> None:
    print(f"ghcr2gitea: {msg}", file=sys.stderr)


def wizard_start(args, *, audit: bool = False) -> WizardStart | int:
    """``ghcr2gitea`` (no subcommand) and ``ghcr2gitea audit`` on a terminal: a WizardStart, or the exit code
    (2) after a one-line error (bad plan, no token, cluster unreachable)."""
    from . import plan as plan_mod
    from .credentials import CredentialError, run_tokens
    from .kube import ClusterUnreachable
    plan_path = getattr(args, "plan", None)
    kubeconfig, context = getattr(args, "kubeconfig", None), getattr(args, "context", None)
    session = None
    if plan_path:
        try:  # asks on a terminal, before the screen opens
            token, ghcr_token = run_tokens(getattr(args, "token_file", None), getattr(args, "ghcr_token_file", None),
                                           audit=audit)
        except CredentialError as e:
            _err(str(e))
            return 2
        try:
            session = Session.connect(plan_path, kubeconfig=kubeconfig, context=context, token=token,
                                      ghcr_token=ghcr_token, audit=audit,
                                      node_probes=bool(getattr(args, "node_probes", False)),
                                      node_timeout=float(getattr(args, "node_timeout", 180) or 180),
                                      patience=float(getattr(args, "api_patience", 120) or 120),
                                      resolve=tuple(getattr(args, "resolve", None) or ()))
        except plan_mod.PlanError as e:
            for line in e.problems:
                _err(line)
            return 2
        except ClusterUnreachable as e:
            _err(str(e))
            return 2
        context = context or session.ctx.plan.context
    try:
        factory = api_factory(kubeconfig, context)
        factory().close()
    except ClusterUnreachable as e:
        if session is not None:
            session.close(wait=0)
        _err(str(e))
        return 2
    where = context or "current context"
    return WizardStart(session, factory, f"{'audit of' if audit else 'migrating'} {where}", command_line(),
                       audit=audit)
