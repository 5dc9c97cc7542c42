"""The wizard driven by Textual's pilot in a process of its own, so a crash point can SIGKILL it.

``python tests/ui/kill_driver.py PLAN KUBECONFIG`` (GITEA_TOKEN, XDG_STATE_HOME and GHCR2GITEA_KILL_AT from
the environment): Apply and Next through every stage, as tests/ui/test_wizard.py's drive() does. Exit 0
when the migration finished — a test that sets a crash point expects the process to die at it instead.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # helpers, which the conftest uses

from conftest import _settle  # noqa: E402 - the UI tests' own wait for quiet

from screens.app import WizardApp  # noqa: E402
from wizard.boot import api_factory  # noqa: E402
from wizard.credentials import Secret  # noqa: E402
from wizard.session import Session  # noqa: E402


async def main(plan: str, kubeconfig: str) -> int:
    session = Session.connect(plan, kubeconfig=kubeconfig, context="sandbox",
                              token=Secret(os.environ["GITEA_TOKEN"]), node_timeout=30)
    app = WizardApp(session, api_factory=api_factory(kubeconfig, "sandbox"), blink=False, resume=False)
    async with app.run_test(size=(120, 36)) as pilot:
        s = app.session
        while not s.complete:
            await _settle(pilot, timeout=60)
            st = s.states[s.current]
            if st.changes and not st.applied:
                await pilot.press("a")
                await _settle(pilot, timeout=60)
            if not s.can_advance():
                print(f"{st.title}: Next closed: {s.next_reason()}", file=sys.stderr)
                return 1
            await pilot.press("n")
        await _settle(pilot, timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
