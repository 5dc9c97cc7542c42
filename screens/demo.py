"""``ghcr2gitea demo``: the wizard on an embedded sandbox — its plan and token, no questions asked."""

from __future__ import annotations

import dataclasses
import os
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


def default_dir() -> Path:
    """Where the demo keeps its folder without ``--dir``: the user's state directory (XDG_STATE_HOME)."""
    from wizard.journal import state_dir
    return state_dir() / "demo"


def keeps_world(opts) -> bool:
    """Whether the demo's world outlives its process: the sandbox's own API and Gitea model keep it on disk."""
    return opts.api == "sandbox" and not opts.gitea_real


# the demo's journal (XDG state) lives in its folder, beside the world it describes
DEMO_STATE = "state"


def start_demo(directory: Path, opts, *, fresh: bool = False):
    """The demo's sandbox in ``directory``: the world kept there by an earlier demo, or a new one (``fresh``
    wipes the folder's sandbox files and journal first; report exports stay)."""
    from sandbox.server import Sandbox, wipe
    directory = Path(directory)
    if fresh:
        wipe(directory, also=(DEMO_STATE,))
    # The sandbox's cluster looks the same on every start (seeded): keep its journal with the sandbox,
    # so a demo never offers to resume another demo's migration.
    os.environ["XDG_STATE_HOME"] = str(directory / DEMO_STATE)
    # the demo shows the whole product: an application checkout for the CI and RBAC stage's workflow
    return Sandbox(directory, dataclasses.replace(opts, app_repo=True, persist=keeps_world(opts))).start()


def demo_kw(sb) -> dict:
    """How the demo's wizard speaks of resuming: its kept world resumes; a world that cannot be kept ends."""
    if sb.opts.persist:
        return {"resume_command": command_line(),
                "start_fresh": "wipes the demo's folder (its world and journal; report exports stay) and starts a "
                               "new sandbox"}
    return {"ends_with_app": f"the demo's sandbox ended with it (its files stay in {sb.dir}): `{command_line()}` "
                             "starts a fresh one, from stage 1"}


def run_demo(directory: str | None, opts, *, fresh: bool = False) -> int:
    import sys

    from sandbox.persist import WorldMismatch
    folder = Path(directory) if directory else default_dir()
    while True:
        try:
            sb = start_demo(folder, opts, fresh=fresh)
        except WorldMismatch as e:
            print(f"ghcr2gitea demo: {e} (--fresh)", file=sys.stderr)
            return 2
        except (ValueError, RuntimeError, OSError) as e:
            print(f"ghcr2gitea demo: {folder}: {e}", file=sys.stderr)
            return 2
        try:
            app = demo_app(sb, **demo_kw(sb))
            app.run()
        finally:
            sb.stop()
        if not app.fresh_asked:
            break
        fresh = True  # "Start fresh" in the resume offer: a new world in the same folder
    code = finish(app)
    kept = "its world, journal and report exports are kept: run it again to resume" if sb.opts.persist else \
        "its report exports are kept"
    print(f"ghcr2gitea demo: the demo's folder is {folder} ({kept})", file=sys.stderr)
    return code
