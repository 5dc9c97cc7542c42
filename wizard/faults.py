"""Crash points for the fault-injection suite: ``GHCR2GITEA_KILL_AT=NAME`` SIGKILLs the process there.

Names: ``before:<stage>`` (after inspect/plan, before apply), ``after:<stage>`` (after apply, before
verify), ``restart:<node>`` (after that node's restart was started). Unset in normal use; the
suite uses it to prove that a run killed at any of these points resumes to the same cluster.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("GHCR2GITEA_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
