"""The demo run twice in the same folder: the second run offers to resume the first one's migration, on the same
world (kept by the sandbox in the folder), or to start fresh."""

from __future__ import annotations

from helpers import fast_options, until

from sandbox.cluster import NAMESPACE
from screens.demo import default_dir, demo_app, demo_kw, start_demo

from .test_wizard import drive, wait_resume_offer


def _app(sb):
    return demo_app(sb, blink=False, log_clock=lambda t: "--:--:--", **demo_kw(sb))


async def _offered(pilot, screen_text) -> str:
    """Until the resume offer is up and drawn; its text."""
    await wait_resume_offer(pilot, screen_text, "the demo run again offering to resume")
    await until(pilot, lambda: "done:" in screen_text(pilot.app), what="the resume offer's done stages drawn")
    return screen_text(pilot.app)


def _uid(sb) -> str:
    return sb.cluster.store.get(NAMESPACE, "", "kube-system")["metadata"]["uid"]


async def test_the_demo_run_again_offers_to_resume_the_earlier_migration_or_to_start_fresh(
        tmp_path, settle, screen_text):
    folder = tmp_path / "demo"
    sb = start_demo(folder, fast_options())
    try:
        uid = _uid(sb)
        app = _app(sb)
        async with app.run_test(size=(120, 36)) as pilot:
            await drive(pilot, settle, until="proxy")  # Preflight … Images done: Secrets written, images copied
            assert [st.key for st in app.session.states if st.done] == ["preflight", "credentials", "secrets",
                                                                       "images"]
            await pilot.press("q")
            await until(pilot, lambda: app.return_code is not None, what="q quits (nothing is being applied)")
        gitea = sb.cluster.registries()["gitea"]
        assert gitea
    finally:
        sb.stop()

    # the second demo: the same cluster, and the offer names what the first one did
    sb = start_demo(folder, fast_options())
    try:
        assert _uid(sb) == uid and sb.cluster.registries()["gitea"] == gitea
        app = _app(sb)
        async with app.run_test(size=(120, 36)) as pilot:
            text = await _offered(pilot, screen_text)
            assert "done: Preflight, Credentials, Registry secrets, Images" in text, text
            assert "re-inspected: the 4 done stage(s) still pass" in text, text
            assert "Start fresh" in text and "wipes the demo's folder" in text
            assert "Start over" not in text, "the footer and the button name the same action"
            await pilot.press("r")
            await settle(pilot)
            s = app.session
            assert s.states[s.current].key == "proxy"
            assert [st.key for st in s.states if st.done] == ["preflight", "credentials", "secrets", "images"]
            await pilot.press("q")
            await until(pilot, lambda: app.return_code is not None, what="q quits (nothing is being applied)")
    finally:
        sb.stop()

    # a third: Start fresh ends the app asking for a new world; the next start is a new cluster, no offer
    sb = start_demo(folder, fast_options())
    try:
        app = _app(sb)
        async with app.run_test(size=(120, 36)) as pilot:
            await _offered(pilot, screen_text)
            await pilot.press("s")
            await until(pilot, lambda: app.return_code is not None, what="Start fresh ends the app")
        assert app.fresh_asked
    finally:
        sb.stop()
    (folder / "ghcr2gitea-report-kept.md").write_text("an export\n")
    sb = start_demo(folder, fast_options(), fresh=True)
    try:
        assert _uid(sb) != uid and sb.cluster.registries()["gitea"] == {}
        assert (folder / "ghcr2gitea-report-kept.md").exists()  # the operator's exports stay
        assert not list((folder / "state").rglob("*.json"))  # the old journal is gone with its world
    finally:
        sb.stop()


def test_the_demo_folder_defaults_to_the_users_state_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_dir() == tmp_path / "xdg" / "ghcr2gitea" / "demo"
