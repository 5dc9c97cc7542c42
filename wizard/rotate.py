"""``ghcr2gitea rotate-token``: put a new Gitea token everywhere the migration put the old one, proven.

The same stages as the migration, with the new token and nothing else: Credentials (the new token is
accepted, may push and pull), Registry secrets (both Secrets), Node registries (every node's
registries.yaml: merge, backup, read-back), Rolling restart (proven, node by node), Verify (pulls on
every node with the new token). Only when all of that passed are the backups this rotation wrote on the
nodes — the only files that still hold the old token — removed, and the operator told the old token can
be revoked in Gitea. Neither token is ever printed: both are masked on every output.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .authflow import secret_credentials
from .credentials import CredentialError, Secret, load_token, mask
from .engine import Runner
from .kube import ClusterUnreachable
from .lock import LockHeld, LockLost
from .registries import PATH
from .run import Run, connect
from .script import Script
from .stages import BY_KEY
from .stages.base import Context, Progress, StopToken
from .stages.nodes import node_exec

STAGES = tuple(BY_KEY[k] for k in ("credentials", "secrets", "registries", "restart", "verify"))


def _err(msg: str) -> int:
    print(f"ghcr2gitea: {msg}", file=sys.stderr, flush=True)
    return 2


BACKUP = re.compile(re.escape(PATH) + r"\.bak-[0-9]{8}T[0-9]{6}Z")


def remove_backups_script(backup: str) -> Script:
    """Remove the backup this rotation wrote (it holds the old token), and nothing else."""
    # exactly what registries.backup_path writes: PATH.bak-YYYYmmddTHHMMSSZ (the name comes back from the node,
    # so it is data: anything else, a path that climbs out or a second word, is refused before a script exists)
    if not BACKUP.fullmatch(backup):
        raise ValueError(f"not a registries.yaml backup: {backup!r}")
    return Script(strict=True).add("rm -f {bak}", bak=backup).add("echo removed")


class Refused(Exception):
    """The rotation cannot start (no migration to rotate, the same token, the lock held): one line, the fix."""


@dataclass(frozen=True)
class Rotation:
    """How a rotation ended: ``code`` 0 when the old token may be revoked; ``line`` what to tell the operator
    last (the revoke line at 0; otherwise what is left to do, or "" when the stages' own lines said it)."""

    code: int
    line: str


# the new token did not pass the first stage: the rotation stopped before it wrote anything
NOT_ACCEPTED = ("the new token did not pass the Credentials checks, so nothing was changed: the old token stays in "
                "use — do not revoke it; create a Gitea token that may push packages for {user}, then run "
                "rotate-token again with it in --new-token-file")
REVOKE = ("the new token is in every Secret and on every node, and pulls with it are proven: the old token can "
          "now be revoked in Gitea (Settings → Applications)")


def token_in_use(cluster, plan, new: Secret, *, field: str = "--new-token-file") -> Secret:
    """The token the migration put in the push secret, which ``new`` replaces; ``Refused`` when there is none
    (not migrated) or it is ``new`` already. ``field``: how the operator gave the new token, for the message."""
    held = secret_credentials(cluster, plan).get("push-secret")
    old = held[1] if held else None
    if old is None:
        raise Refused(f"the push secret {plan.secrets_namespace}/{plan.push_secret} holds no token for "
                      f"{plan.internal_service}: migrate first (ghcr2gitea apply), then rotate")
    if old == new:
        raise Refused(f"{field} holds the token already in use: create a new token in Gitea "
                      "(Settings → Applications) and pass that one")
    return old


def rotate(cluster, plan, new: Secret, old: Secret, *, out: Callable[[str], None], node_timeout: float,
           on_progress: Callable[[Progress], None] | None = None, stop: StopToken | None = None) -> Rotation:
    """The rotation, for both faces: STAGES with the new token under the cluster lock (``Refused`` when another
    run holds it), then the backups this rotation wrote removed. ``out`` hears the stages' lines (masked),
    ``on_progress`` every progress event (the rollout's per-node phases and proofs), ``stop`` Pause/Abort."""
    ctx = Context(plan=plan, cluster=cluster, token=new, retired_secrets=(old,), node_timeout=float(node_timeout))
    if stop is not None:
        ctx.stop = stop
    run = Run(ctx, STAGES)
    if on_progress is not None:
        run.subscribe(on_progress)
    # the stages' fixes name the migration's token flags; here the token comes from --new-token-file
    runner = Runner(ctx, lambda text: out(text.replace("GITEA_TOKEN or --token-file", "--new-token-file")),
                    STAGES, run=run)
    try:
        try:
            run.begin()
        except LockHeld as e:
            raise Refused(str(e)) from None
        code = runner.apply()
        if code != 0:
            return Rotation(code, NOT_ACCEPTED.format(user=plan.username) if run.failed_stage == "credentials" else "")
        if ctx.node_backups:
            results = node_exec(ctx).run_many({n: remove_backups_script(b) for n, b in ctx.node_backups.items()},
                                              stage="registries", purpose="exec", timeout=ctx.node_timeout)
            left = sorted(n for n, r in results.items() if "removed" not in (r.output or ""))
            if left:
                return Rotation(2, f"the backups on {', '.join(left)} ({sorted(set(ctx.node_backups.values()))[0]}) "
                                   "still hold the old token: remove them by hand before revoking it")
        return Rotation(0, REVOKE)
    finally:
        run.close()


def run_rotate(args) -> int:
    from .commands import plan_or_report
    plan = plan_or_report(args.plan, args.resolve)
    if plan is None:
        return 2
    try:
        new = load_token(args.new_token_file, prompt=False)
    except CredentialError as e:
        return _err(str(e).replace("--token-file", "--new-token-file", 1))
    try:
        cluster = connect(plan, kubeconfig=args.kubeconfig, context=args.context, on_retry=lambda m: None,
                          patience=args.api_patience, request_timeout=args.api_timeout)
    except ClusterUnreachable as e:
        return _err(str(e))
    old: Secret | None = None
    try:
        old = token_in_use(cluster, plan, new)
        if not args.yes:
            return _err("rotate-token changes every node and restarts k3s on each: pass --yes to confirm")
        done = rotate(cluster, plan, new, old, out=lambda text: print(text, flush=True),
                      node_timeout=args.node_timeout)
        if done.code == 0:
            print(done.line, flush=True)
        elif done.line:
            _err(done.line)
        return done.code
    except Refused as e:
        return _err(mask(str(e), new, old))
    except (ClusterUnreachable, LockLost) as e:
        return _err(mask(str(e), new, old))
    except KeyboardInterrupt:
        _err("interrupted; run the same command again to finish the rotation")
        return 130
    except Exception as e:  # noqa: BLE001 - never a traceback (it could carry a token)
        return _err(mask(f"internal error: {type(e).__name__}: {e}; run the same command again", new, old))
    finally:
        cluster.close()
