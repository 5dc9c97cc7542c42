"""Issue 11 §3 in the wizard: another team's object stops Apply with nothing written; adopting it takes the
object's exact name, typed, and is recorded in the journal."""

from __future__ import annotations

import json

from helpers import until

from screens.modals.adopt import AdoptScreen
from wizard.cluster import Cluster, kind_of


async def test_a_conflict_stops_apply_and_adoption_needs_the_typed_name(wizard, settle, screen_text, journal_home):
    app, sb = wizard()
    cluster = Cluster.connect(str(sb.kubeconfig), patience=10)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gitea-proxy-ca", "namespace": "default"},
          "data": {"ca.crt": "the payments team's CA bundle\n"}}
    cluster.request("POST", kind_of(cm).path("default"), body=cm, query={"fieldManager": "kubectl-client-side-apply"},
                    content_type="application/json")
    before = json.dumps(cluster.get("ConfigMap", "gitea-proxy-ca", "default"), sort_keys=True)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            s = app.session
            await settle(pilot)
            while not s.states[s.current].changes:  # Preflight and Credentials write nothing
                await pilot.press("n")
                await settle(pilot)
            await pilot.press("a")  # the first stage that writes: the conflict stops the run before anything
            await settle(pilot)
            st = s.states[s.current]
            assert st.error is not None and "gitea-proxy-ca: exists and is not managed by ghcr2gitea" in st.error.cause
            assert json.dumps(cluster.get("ConfigMap", "gitea-proxy-ca", "default"), sort_keys=True) == before
            assert cluster.get("Secret", "gitea-registry-push", "default") is None  # nothing of the stage written
            await pilot.press("t")
            await until(pilot, lambda: isinstance(app.screen, AdoptScreen), what="t opens the adopt dialog")
            await pilot.press(*"yes", "enter")
            await until(pilot, lambda: "type gitea-proxy-ca exactly" in screen_text(app),
                        what="a wrong name refused, saying what to type")
            assert isinstance(app.screen, AdoptScreen)
            app.screen.query_one("Input").value = ""
            await pilot.press(*"gitea-proxy-ca", "enter")
            await settle(pilot)
            assert not isinstance(app.screen, AdoptScreen)
            events = [e for e in s.journal.events if e["type"] == "adopted"]
            assert [(e["kind"], e["namespace"], e["name"]) for e in events] == [("ConfigMap", "default",
                                                                                  "gitea-proxy-ca")]
            await pilot.press("a")  # adopted: the run goes on
            await settle(pilot)
            assert s.states[s.current].error is None and s.states[s.current].applied
            assert cluster.get("Secret", "gitea-registry-push", "default") is not None
    finally:
        cluster.close()
