"""``ghcr2gitea demo``: the wizard on an embedded sandbox — its plan and token, no questions asked."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from wizard.boot import api_factory, command_line
from wizard.credentials import Secret
from wizard.session import Session

from .app import WizardApp, finish

__all__ = ["WizardApp", "demo_app", "run_demo"]


def demo_session(sb, *, audit: bool = False, node_timeout: float = 180.0) -> Session:
    """A session on a started Sandbox, with the plan and token it wrote."""
    token = Secret(sb.token_file.read_text().strip())
    return Session.connect(str(sb.plan), kubeconfig=str(sb.kubeconfig), context="sandbox", token=token,
                           audit=audit, node_timeout=node_timeout)


def demo_app(sb, *, audit: bool = False, node_timeout: float = 180.0, **kw) -> WizardApp:
    session = demo_session(sb, audit=audit, node_timeout=node_timeout)
    nodes = len(sb.cluster.nodes)
    kw.setdefault("subtitle", f"{'audit' if audit else 'demo'} on the sandbox ({nodes} nodes)")
    kw.setdefault("export_dir", sb.dir)
    return WizardApp(session, api_factory=api_factory(str(sb.kubeconfig), "sandbox"), **kw)


def run_demo(directory: str | None, opts) -> int:
    from sandbox.server import Sandbox
    tmp = None
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="ghcr2gitea-demo-")
        directory = tmp.name
    # The sandbox's cluster looks the same on every start (seeded): keep its journal with the sandbox,
    # so a demo never offers to resume another demo's migration.
    os.environ["XDG_STATE_HOME"] = str(Path(directory) / "state")
    # the demo shows the whole product: an application checkout for the CI and RBAC stage's workflow
    sb = Sandbox(Path(directory), dataclasses.replace(opts, app_repo=True)).start()
    # The sandbox's world lives in this process: quitting ends it, and the next demo is a fresh cluster
    # (another kube-system UID, so its journal starts anew). Say that, never "resume".
    kept = "" if tmp else f" (its files stay in {directory})"
    try:
        app = demo_app(sb, ends_with_app=f"the demo's sandbox ended with it{kept}: `{command_line()}` starts a "
                       "fresh one, from stage 1")
        app.run()
    finally:
        sb.stop()
        if tmp:
            tmp.cleanup()
    return finish(app)
