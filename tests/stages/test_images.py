"""The Images stage and the Workloads gate, as an operator meets them on a sandbox whose Gitea starts empty
(a real migration): apply copies what the cluster runs with GHCR's digests, and with the copy passed over
nothing is pointed at an image Gitea does not have."""

from __future__ import annotations

import yaml
from helpers import run_cli, sandbox_state

from sandbox.cluster import GUIDE_IMAGES, ORG


def plan_args(sb) -> list[str]:
    return ["--plan", str(sb.plan), "--kubeconfig", str(sb.kubeconfig)]


def live_images(sb) -> dict[str, list[str]]:
    from kubernetes import client

    from wizard.kube import api_client
    api = api_client(str(sb.kubeconfig))
    try:
        apps = client.AppsV1Api(api)
        out = {}
        for obj in apps.list_namespaced_deployment("default").items + apps.list_namespaced_stateful_set("default").items:
            if obj.metadata.name.startswith("gwa-"):
                out[obj.metadata.name] = [c.image for c in obj.spec.template.spec.containers]
        return out
    finally:
        api.close()


def test_apply_on_an_empty_gitea_copies_the_images_with_ghcr_digests_and_the_workloads_end_ready(make_sandbox):
    sb = make_sandbox(gitea_preloaded=False)
    assert sandbox_state(sb)["registries"]["gitea"] == {}
    res = run_cli(sb, "apply", *plan_args(sb), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[4/11] Images: applying 3 change(s)" in res.stdout
    assert "[11/11] Verify: ok" in res.stdout
    # progress per image, in bytes and blobs
    registry = yaml.safe_load(sb.plan.read_text())["registry"]["host"]
    for name in GUIDE_IMAGES:
        assert f"{registry}/{ORG}/{name}: " in res.stdout and " blobs" in res.stdout
    regs = sandbox_state(sb)["registries"]
    for name in GUIDE_IMAGES:
        key = f"{ORG}/{name}:latest"
        assert regs["gitea"][key] == regs["ghcr"][key], key
    # the workloads run from Gitea, Ready
    from kubernetes import client

    from wizard.kube import api_client
    api = api_client(str(sb.kubeconfig))
    pods = [p for p in client.CoreV1Api(api).list_namespaced_pod("default").items if p.metadata.name.startswith("gwa-")]
    api.close()
    assert len(pods) == 3
    for p in pods:
        assert p.status.phase == "Running" and p.status.container_statuses[0].ready, p.metadata.name
        image_id = p.status.container_statuses[0].image_id
        repo = image_id.split("@")[0].split("/", 1)[1]
        assert image_id.startswith(registry + "/") and image_id.split("@")[1] == regs["ghcr"][f"{repo}:latest"]
    # a second plan copies nothing: every tag is there with the same digest
    again = run_cli(sb, "plan", *plan_args(sb))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[4/11] Images: nothing to change" in again.stdout
    ghcr_token = (sb.dir / "ghcr-token").read_text().strip()
    assert ghcr_token not in res.stdout + res.stderr + again.stdout


def test_with_images_overridden_workloads_refuses_and_names_every_missing_image(make_sandbox):
    sb = make_sandbox(gitea_preloaded=False)
    before = live_images(sb)
    res = run_cli(sb, "apply", *plan_args(sb), "--yes", "--override", "images")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "[4/11] Images: overridden (--override images): not applied, not checked" in res.stdout
    assert "[9/11] Workloads: FAILED — images the workloads will run are in Gitea" in res.stdout
    registry = yaml.safe_load(sb.plan.read_text())["registry"]["host"]
    for name in GUIDE_IMAGES:
        assert f"{registry}/{ORG}/{name}:latest is not in Gitea" in res.stdout, res.stdout
    assert "run stage Images" in res.stdout and "nothing was patched" in res.stdout
    assert "[10/11]" not in res.stdout
    # nothing was patched: every workload still pulls from GHCR
    assert live_images(sb) == before
    assert all(img.startswith("ghcr.io/") for images in before.values() for img in images)
    assert sandbox_state(sb)["registries"]["gitea"] == {}


def test_override_names_an_unknown_stage_in_one_line(sandbox):
    res = run_cli(sandbox, "apply", *plan_args(sandbox), "--yes", "--override", "imgaes")
    assert res.returncode == 2
    error = res.stderr.strip().splitlines()[-1]
    assert "'imgaes' is not a stage key or title; the stages: preflight (Preflight), " in error, res.stderr
    assert "images (Images)" in error and "ingress (HTTPS ingress)" in error
    assert "Traceback" not in res.stderr


def test_override_takes_the_stages_title_in_any_case_as_well_as_its_key(sandbox):
    res = run_cli(sandbox, "apply", *plan_args(sandbox), "--dry-run", "--override", "https  INGRESS",
                  "--override", "Images")
    assert "Traceback" not in res.stderr and res.returncode != 2, res.stdout + res.stderr
    assert "[4/11] Images: overridden (--override images): not applied, not checked" in res.stdout, res.stdout
    assert "[6/11] HTTPS ingress: overridden (--override ingress): not applied, not checked" in res.stdout


def test_a_ghcr_token_file_readable_by_others_is_refused_in_one_line(sandbox, tmp_path):
    f = tmp_path / "ghcr-token"
    f.write_text("ghp_" + "a" * 36 + "\n")
    f.chmod(0o644)
    res = run_cli(sandbox, "plan", *plan_args(sandbox), "--ghcr-token-file", str(f))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"ghcr2gitea: --ghcr-token-file {f}: readable by group or others "
                                               f"(mode 644); run: chmod 600 {f}"]
    assert "ghp_" not in res.stdout + res.stderr


def test_images_command_copies_the_tags_and_digests_the_cluster_runs(make_sandbox):
    """``ghcr2gitea images`` without --tags: every tag and digest the cluster runs (a bare Pod on an old tag, a
    Job on a digest only, besides the guide's Deployments on latest) — not just latest."""
    import json

    from kubernetes import client

    from wizard.kube import api_client
    sb = make_sandbox(gitea_preloaded=False)
    regs = sandbox_state(sb)["registries"]["ghcr"]
    agents = f"{ORG}/github-workflow-agents"
    old, digest = f"{agents}:v1.0.3", regs[f"{ORG}/gwa-webhook:latest"]
    api = api_client(str(sb.kubeconfig))
    try:
        client.CoreV1Api(api).create_namespaced_pod("default", {
            "metadata": {"name": "old-agent"},
            "spec": {"containers": [{"name": "agent", "image": f"ghcr.io/{old}"}]}})
        client.BatchV1Api(api).create_namespaced_job("default", {
            "metadata": {"name": "pinned-hook"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "hook", "image": f"ghcr.io/{ORG}/gwa-webhook@{digest}"}]}}}})
    finally:
        api.close()
    ghcr = {"GHCR_TOKEN": (sb.dir / "ghcr-token").read_text().strip()}
    res = run_cli(sb, "images", "--plan", str(sb.plan), "--format", "json", env=ghcr)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    copied = {(i["source"].split("/", 1)[1], t["tag"]): t for i in report["images"] for t in i["tags"]}
    assert (agents, "v1.0.3") in copied, (sorted(copied), res.stderr)
    assert copied[(agents, "v1.0.3")]["target_digest"] == regs[old]
    assert copied[(f"{ORG}/gwa-webhook", digest)]["target_digest"] == digest  # by digest: no tag needed
    for name in GUIDE_IMAGES:
        assert copied[(f"{ORG}/{name}", "latest")]["target_digest"] == regs[f"{ORG}/{name}:latest"]
    gitea = sandbox_state(sb)["registries"]["gitea"]
    assert gitea[old] == regs[old] and f"{agents}:v1.0.4" not in gitea  # only what runs
    # a cluster named but not readable: one line, exit 2, nothing copied
    bad = run_cli(sb, "images", "--plan", str(sb.plan), "--kubeconfig", str(sb.dir / "nope"), env=ghcr)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"ghcr2gitea: images: cannot read what the cluster runs: kubeconfig "
                                               f"{sb.dir / 'nope'}: file not found; pass --kubeconfig FILE or set "
                                               "KUBECONFIG"]
