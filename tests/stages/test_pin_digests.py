"""Issue 16's rest, as an operator meets it on a sandbox whose Gitea starts empty: ``workloads.pin_digests``
pins live workloads and manifest files to the digests Gitea holds, a reference by digest alone is copied and
migrated, CronJobs are patched and the Jobs and bare Pods that cannot be are named."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import run_cli, sandbox_state

from sandbox.cluster import GUIDE_IMAGES, ORG
from wizard import plan as P

REGISTRY = "registry.example.test"
PLAN_DATA = {
    "version": 1,
    "gitea": {"root_url": "https://gitea.k3s.example.test/", "org": ORG},
    "registry": {"host": REGISTRY},
    "images": [{"source": f"ghcr.io/{ORG}/{n}", "target": f"{REGISTRY}/{ORG}/{n}"} for n in GUIDE_IMAGES],
}


def plan_args(sb) -> list[str]:
    return ["--plan", str(sb.plan), "--kubeconfig", str(sb.kubeconfig)]


def edit_plan(sb, **workloads) -> dict:
    data = yaml.safe_load(sb.plan.read_text())
    data["workloads"] = {**(data.get("workloads") or {}), **workloads}
    sb.plan.write_text(yaml.safe_dump(data))
    return data


class Api:
    def __init__(self, sb):
        from kubernetes import client

        from wizard.kube import api_client
        self._api = api_client(str(sb.kubeconfig))
        self.apps, self.core, self.batch = (client.AppsV1Api(self._api), client.CoreV1Api(self._api),
                                            client.BatchV1Api(self._api))

    def close(self):
        self._api.close()

    def workload_images(self) -> dict[str, list[str]]:
        out = {}
        for obj in (self.apps.list_namespaced_deployment("default").items
                    + self.apps.list_namespaced_stateful_set("default").items):
            out[obj.metadata.name] = [c.image for c in obj.spec.template.spec.containers]
        return out


@pytest.mark.parametrize("value", ["yes-please", 1, "true"])
def test_pin_digests_takes_a_boolean_only_in_one_line(tmp_path, value):
    data = {**PLAN_DATA, "workloads": {"pin_digests": value}}
    with pytest.raises(P.PlanError) as e:
        P.from_dict(data)
    assert e.value.problems == [f"plan: workloads.pin_digests: {value!r}: expected true or false (unquoted)"]
    f = tmp_path / "plan.yaml"
    f.write_text(yaml.safe_dump(data))
    res = run_cli(None, "images", "--plan", str(f), "--dry-run")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"ghcr2gitea: plan: workloads.pin_digests: {value!r}: expected true "
                                               "or false (unquoted)"]


def test_pin_digests_defaults_off_and_images_stays_a_list():
    assert P.from_dict(PLAN_DATA).pin_digests is False
    assert P.from_dict({**PLAN_DATA, "workloads": {"pin_digests": True}}).pin_digests is True


def test_pin_digests_pins_workloads_and_manifests_to_the_digests_gitea_holds_and_audit_passes(make_sandbox):
    sb = make_sandbox(gitea_preloaded=False)
    k8s = sb.dir / "k8s"
    k8s.mkdir()
    manifest = k8s / "runner.yaml"
    manifest.write_text("# the runner's pod (kept as written)\nspec:\n  containers:\n    - name: agents\n"
                        f"      image: 'ghcr.io/{ORG}/github-workflow-agents:latest'  # pinned by ghcr2gitea\n")
    edit_plan(sb, pin_digests=True, manifests=["k8s"])
    res = run_cli(sb, "apply", *plan_args(sb), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    regs = sandbox_state(sb)["registries"]
    digests = {n: regs["ghcr"][f"{ORG}/{n}:latest"] for n in GUIDE_IMAGES}
    assert all(regs["gitea"][f"{ORG}/{n}:latest"] == d for n, d in digests.items())
    registry = yaml.safe_load(sb.plan.read_text())["registry"]["host"]
    api = Api(sb)
    try:
        images = api.workload_images()
        for name, (_, obj) in GUIDE_IMAGES.items():
            assert images[obj] == [f"{registry}/{ORG}/{name}@{digests[name]}"], images
        pods = [p for p in api.core.list_namespaced_pod("default").items if p.metadata.name.startswith("gwa-")]
        assert len(pods) == 3
        for p in pods:
            st = p.status.container_statuses[0]
            assert st.ready and st.image_id == p.spec.containers[0].image, (p.metadata.name, st.image_id)
    finally:
        api.close()
    assert manifest.read_text() == (
        "# the runner's pod (kept as written)\nspec:\n  containers:\n    - name: agents\n"
        f"      image: '{registry}/{ORG}/github-workflow-agents@{digests['github-workflow-agents']}'  # pinned by "
        "ghcr2gitea\n")
    # the pinned references are migrated: nothing left to plan, and the audit finds nothing
    again = run_cli(sb, "plan", *plan_args(sb))
    assert again.returncode == 0 and "Workloads: nothing to change" in again.stdout, again.stdout
    audit = run_cli(sb, "audit", *plan_args(sb), "--format", "json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    stages = {s["key"]: s for s in json.loads(audit.stdout)["stages"]}
    assert stages["workloads"]["status"] == "pass" and stages["images"]["status"] == "pass", stages["workloads"]


def test_a_digest_only_reference_is_copied_by_digest_and_cronjobs_move_while_jobs_and_pods_are_named(make_sandbox):
    from kubernetes import client
    sb = make_sandbox(gitea_preloaded=False)
    regs = sandbox_state(sb)["registries"]
    pinned = regs["ghcr"][f"{ORG}/github-workflow-agents:v1.0.3"]  # a tag nothing runs: only its digest is named
    secret = [client.V1LocalObjectReference(name="ghcr-secret")]

    def pod(name, image, **kw):
        return client.V1PodSpec(containers=[client.V1Container(name=name, image=image)], image_pull_secrets=secret, **kw)

    api = Api(sb)
    try:
        labels = {"app": "by-digest"}
        api.apps.create_namespaced_deployment("default", client.V1Deployment(
            metadata=client.V1ObjectMeta(name="by-digest"), spec=client.V1DeploymentSpec(
                replicas=1, selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels),
                                                  spec=pod("agents", f"ghcr.io/{ORG}/github-workflow-agents@{pinned}")))))
        job_spec = client.V1JobSpec(template=client.V1PodTemplateSpec(spec=pod(
            "orch", f"ghcr.io/{ORG}/gwa-orchestrator:latest", restart_policy="Never")))
        api.batch.create_namespaced_cron_job("default", client.V1CronJob(
            metadata=client.V1ObjectMeta(name="nightly"), spec=client.V1CronJobSpec(
                schedule="0 3 * * *", job_template=client.V1JobTemplateSpec(spec=job_spec))))
        api.batch.create_namespaced_cron_job("default", client.V1CronJob(
            metadata=client.V1ObjectMeta(name="report"), spec=client.V1CronJobSpec(
                schedule="0 4 * * *", job_template=client.V1JobTemplateSpec(spec=client.V1JobSpec(
                    template=client.V1PodTemplateSpec(spec=pod("report", f"ghcr.io/{ORG}/nightly-report:2",
                                                               restart_policy="Never")))))))
        api.batch.create_namespaced_job("default", client.V1Job(metadata=client.V1ObjectMeta(name="migrate-once"),
                                                                spec=job_spec))
        api.core.create_namespaced_pod("default", client.V1Pod(metadata=client.V1ObjectMeta(name="debug"),
                                                               spec=pod("hook", f"ghcr.io/{ORG}/gwa-webhook:latest")))
    finally:
        api.close()
    # init finds images that only a CronJob runs (it lists what the Images stage would copy)
    init = run_cli(sb, "init", "--kubeconfig", str(sb.kubeconfig))
    assert init.returncode == 0, init.stderr
    assert f"ghcr.io/{ORG}/nightly-report" in {i.source for i in P.loads(init.stdout).images}
    res = run_cli(sb, "apply", *plan_args(sb), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    registry = yaml.safe_load(sb.plan.read_text())["registry"]["host"]
    assert f"copy ghcr.io/{ORG}/github-workflow-agents → {registry}/{ORG}/github-workflow-agents: " in out
    assert pinned in out
    assert f"warning: Job default/migrate-once runs ghcr.io/{ORG}/gwa-orchestrator:latest" in out
    assert f"warning: Pod default/debug runs ghcr.io/{ORG}/gwa-webhook:latest" in out
    api = Api(sb)
    try:
        # the digest-only Deployment runs that very manifest, pulled from Gitea (which has no tag for it)
        assert api.workload_images()["by-digest"] == [f"{registry}/{ORG}/github-workflow-agents@{pinned}"]
        pods = [p for p in api.core.list_namespaced_pod("default").items if p.metadata.name.startswith("by-digest")]
        assert len(pods) == 1 and pods[0].status.container_statuses[0].ready
        assert pods[0].status.container_statuses[0].image_id == f"{registry}/{ORG}/github-workflow-agents@{pinned}"
        assert f"{ORG}/github-workflow-agents:v1.0.3" not in sandbox_state(sb)["registries"]["gitea"]
        # the CronJob's next Job pulls from Gitea; the running Job and the bare Pod are left as they are
        cj = api.batch.read_namespaced_cron_job("nightly", "default").spec.job_template.spec.template.spec
        assert [c.image for c in cj.containers] == [f"{registry}/{ORG}/gwa-orchestrator:latest"]
        assert [s.name for s in cj.image_pull_secrets] == ["gitea-registry-secret"]
        job = api.batch.read_namespaced_job("migrate-once", "default").spec.template.spec
        assert [c.image for c in job.containers] == [f"ghcr.io/{ORG}/gwa-orchestrator:latest"]
        assert [c.image for c in api.core.read_namespaced_pod("debug", "default").spec.containers] == \
            [f"ghcr.io/{ORG}/gwa-webhook:latest"]
    finally:
        api.close()
    # the audit says which objects keep GHCR, without failing the migration for them
    audit = run_cli(sb, "audit", *plan_args(sb), "--format", "json")
    stages = {s["key"]: s for s in json.loads(audit.stdout)["stages"]}
    warn = [c for c in stages["workloads"]["checks"] if c["name"] == "running Jobs and Pods that cannot be patched"]
    assert len(warn) == 1 and warn[0]["status"] == "warn", stages["workloads"]
    assert "Job default/migrate-once" in warn[0]["cause"] and "Pod default/debug" in warn[0]["cause"]
    assert stages["workloads"]["status"] == "warn"
    assert "CronJob default/nightly" in json.dumps(stages["workloads"])
