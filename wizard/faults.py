"""Crash points for the fault-injection suite: ``GHCR2GITEA_KILL_AT=NAME`` SIGKILLs the process there.

Names: ``before:<stage>`` (after inspect/plan, before apply), ``after:<stage>`` (after apply, before
verify), ``restart:<node>`` (after that node's restart was started). Unset in normal use; the
suite uses it to prove that a run killed at any of these points resumes to the same cluster.
``GHCR2GITEA_CRASH_LOG=FILE`` appends each point's name as the run passes it (the suite checks that the
wizard's path passes the same points as the headless one).
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if log := os.environ.get("GHCR2GITEA_CRASH_LOG"):
        with open(log, "a") as f:
            f.write(name + "\n")
    if os.environ.get("GHCR2GITEA_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
