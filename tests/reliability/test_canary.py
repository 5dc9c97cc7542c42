"""A recognisable token and the proxy's private key must appear nowhere the tool writes.

The whole demo migration, a resumed run, plan, dry-run, audit in every format, the
journal (file and ConfigMap mirror), every object in the cluster but the Secrets, every pod log, and
everything under the test's state directory are scanned.
"""

from __future__ import annotations

import base64

import pytest
from helpers import assert_nowhere, left_in_the_world, run_cli, until
from helpers import mutating_requests as mutating_requests_of

CANARY = "canary-3b1f9e7c2d4a6f80b5e1c9d7a3f2e6b4d8c0a1e9"


@pytest.mark.parametrize("world_api", ["sandbox", pytest.param("real", marks=pytest.mark.real)], indirect=True)
def test_no_token_and_no_private_key_in_anything_the_tool_produced(world_api, make_sandbox, tmp_path, reliability):
    sb = make_sandbox(gitea_token=CANARY, restart_seconds=(0.2, 0.3))
    state = tmp_path / "state"
    env = {"XDG_STATE_HOME": str(state)}
    outputs = []
    args = ["--plan", str(sb.plan)]
    outputs.append(run_cli(sb, "plan", *args, env=env))
    outputs.append(run_cli(sb, "apply", *args, "--dry-run", env=env))
    killed = run_cli(sb, "apply", *args, "--yes", env={**env, "GHCR2GITEA_KILL_AT": "after:restart"})
    outputs.append(killed)
    outputs.append(run_cli(sb, "apply", *args, "--yes", env=env))
    assert outputs[-1].returncode == 0, outputs[-1].stdout
    for fmt in ("text", "json", "markdown"):
        outputs.append(run_cli(sb, "audit", *args, "--format", fmt, env=env))
    outputs.append(run_cli(sb, "apply", *args, "--yes", token="wrong-" + CANARY[::-1], env=env))

    from kubernetes import client

    from wizard.kube import api_client
    api = api_client(str(sb.kubeconfig))
    key_b64 = client.CoreV1Api(api).read_namespaced_secret("gitea-proxy-tls", "default").data["tls.key"]
    api.close()
    private_key = base64.b64decode(key_b64).decode()
    key_body = "".join(private_key.splitlines()[1:-1])[:64]

    produced = {f"output {i}": o.stdout + o.stderr for i, o in enumerate(outputs)}
    produced.update(left_in_the_world(sb, state))  # cluster objects but Secrets, journal and its mirror, pod logs
    assert_nowhere(produced, CANARY)
    for where, text in produced.items():
        assert key_body not in text, f"the proxy's private key leaked into {where}"
    if world_api == "real":
        reliability.record("secrets", "the same runs on a real kube-apiserver", "neither appears in any output, "
                           "the journal, any cluster object other than the Secrets, the API server's audit log or "
                           "the control plane's logs")
    else:
        reliability.record("secrets", "canary token through plan, dry-run, killed + resumed apply, audit (3 formats), "
                           "a wrong-token run; the proxy key", "neither appears in any output, the journal file, "
                           "its ConfigMap mirror, or any cluster object other than the Secrets")


async def test_ui_screens_export_and_report_never_show_the_token(make_sandbox, tmp_path, monkeypatch, reliability):
    """The demo UI through Credentials and Registry secrets, its report export, and the GitOps export."""
    from screens.demo import demo_app
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    sb = make_sandbox(gitea_token=CANARY, restart_seconds=(0.2, 0.3))
    app = demo_app(sb, blink=False, export_dir=tmp_path / "report")
    shots = []
    async with app.run_test(size=(120, 36)) as pilot:
        def idle() -> bool:  # a worker the key started counts until it has finished, pending ones too
            return not app._busy() and all(w.is_finished for w in app.workers if w.group in ("engine", "export"))
        for key in ("", "n", "a", "n", "a", "n", "e"):  # Preflight → Credentials → Registry secrets (applied) → export
            if key:
                await pilot.press(key)  # returns once the key is handled: its worker exists
            # a loaded machine is slow, never a reason to go on early
            await until(pilot, idle, what=f"the wizard idle after {key!r}", timeout=90)
            shots.append(app.export_screenshot())
        assert len(app.exported) == 2, app.exported  # the report export was written, and is scanned below
    applied = [m for m in mutating_requests_of(sb) if "/secrets/gitea-registry-push" in m]
    assert applied, "the UI did not get as far as applying the registry secrets"
    res = run_cli(sb, "export", "--plan", str(sb.plan), "--dir", str(tmp_path / "gitops"))
    assert res.returncode == 0, res.stderr
    produced = {f"screen {i}": s for i, s in enumerate(shots)}
    produced["export output"] = res.stdout + res.stderr
    for f in list((tmp_path / "gitops").rglob("*")) + list((tmp_path / "report").rglob("*")) + list(
            (tmp_path / "state").rglob("*")):
        if f.is_file():
            produced[str(f)] = f.read_text(errors="replace")
    assert any("gitops" in k for k in produced) and len(shots) == 7
    assert_nowhere(produced, CANARY)
    reliability.record("secrets", "canary token through the UI (screens after each step, report export) and the "
                       "GitOps export", "the token appears on no screen and in no exported file")
