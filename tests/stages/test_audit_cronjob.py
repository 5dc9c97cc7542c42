"""export --audit-cronjob (the in-cluster audit's objects) and audit --result-configmap (its one write): what the
operator gets, the options refused with one line naming the fix, and the write refused for anything but the
wizard's own result ConfigMap. The RBAC proven sufficient and minimal on a real API server:
tests/real/test_audit_cronjob_real.py."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml
from helpers import mutating_requests

from ghcr2gitea.cli import main
from wizard import auditcron as A
from wizard.cluster import Cluster, ClusterReader, ReadOnlyViolation

VERSIONS = ["1.28", "1.29", "1.30", "1.31", "1.32", "1.33"]
IMAGE = "registry.example.test:5000/tools/ghcr2gitea:0.1"


def _plan(tmp_path, **sections) -> str:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    plan = {"version": 1, "cluster": {"context": "lab"},
            "gitea": {"root_url": "https://gitea.example.test/", "org": "acme"},
            "registry": {"host": "registry.example.test", "ca_file": str(ca)},
            "images": [{"source": "ghcr.io/acme/app", "target": "registry.example.test/acme/app"}],
            "workloads": {"manifests": ["deploy/"]}, **sections}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


def _export(tmp_path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["export", "--plan", _plan(tmp_path), "--dir", str(tmp_path / "out"), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_export_writes_the_audits_objects_labelled_valid_and_needs_no_cluster(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))  # no cluster is read
    code, out, err = _export(tmp_path, capsys, "--audit-cronjob", "--audit-image", IMAGE, "--audit-schedule",
                             "*/30 8-18 * * mon-fri")
    assert code == 0, err
    docs = list(yaml.safe_load_all((tmp_path / "out" / A.FILE).read_text()))
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                         *["Role", "RoleBinding"] * 3, "ConfigMap", "ConfigMap", "CronJob"]
    assert f"wrote {tmp_path / 'out' / A.FILE}" in out
    for d in docs:
        assert d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ghcr2gitea"
        for version in VERSIONS:
            kubernetes_validate.validate(d, version, strict=True)
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    cron = by[("CronJob", A.NAME)]
    assert cron["spec"]["schedule"] == "*/30 8-18 * * mon-fri"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # one try: the Job's status is the audit's exit code
    (c,) = job["template"]["spec"]["containers"]
    assert c["image"] == IMAGE and c["command"] == ["ghcr2gitea", "audit", "--plan", "plan.yaml", "--format", "json",
                                                     "--result-configmap", f"{A.DEFAULT_NAMESPACE}/{A.RESULT}"]
    assert c["securityContext"]["privileged"] is False and c["securityContext"]["readOnlyRootFilesystem"]
    # read-only cluster-wide; Secrets only by name, only get; the one write is the result ConfigMap's, by name
    cr = by[("ClusterRole", A.NAME)]["rules"]
    assert {v for r in cr for v in r["verbs"]} == {"get", "list"}
    assert not {"secrets", "pods", "pods/exec", "pods/log"} & {res for r in cr for res in r["resources"]}
    (secrets,) = by[("Role", f"{A.NAME}-secrets")]["rules"]
    assert secrets == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                       "resourceNames": ["gitea-proxy-tls", "gitea-registry-push", "gitea-registry-secret"]}
    (pods,) = by[("Role", f"{A.NAME}-pods")]["rules"]  # bare Pods, listed in the workloads namespace only
    assert pods == {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    assert by[("Role", f"{A.NAME}-pods")]["metadata"]["namespace"] == "default"
    (result,) = by[("Role", f"{A.NAME}-result")]["rules"]
    assert result["resourceNames"] == [A.RESULT] and result["verbs"] == ["get", "update"]
    assert "data" not in by[("ConfigMap", A.RESULT)]  # applying the file again keeps the last result
    # the plan the pod reads: its CA beside it (a relative name: the container's working directory), and
    # nothing that lives on the operator's machine only
    files = by[("ConfigMap", A.PLAN_CM)]["data"]
    plan = yaml.safe_load(files["plan.yaml"])
    assert plan["registry"]["ca_file"] == "registry-ca.crt" and "BEGIN CERTIFICATE" in files["registry-ca.crt"]
    assert "manifests" not in plan.get("workloads", {})


def test_another_namespace_is_the_operators_and_is_not_exported(tmp_path, capsys):
    code, _, err = _export(tmp_path, capsys, "--audit-cronjob", "--audit-image", IMAGE, "--audit-namespace", "ops")
    assert code == 0, err
    docs = list(yaml.safe_load_all((tmp_path / "out" / A.FILE).read_text()))
    assert "Namespace" not in [d["kind"] for d in docs]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] in ("CronJob", "ServiceAccount")} == {"ops"}


@pytest.mark.parametrize("flags, said", [
    (["--audit-cronjob"], "--audit-cronjob needs --audit-image IMAGE"),
    (["--audit-image", IMAGE], "--audit-image is an option of --audit-cronjob"),
    (["--audit-cronjob", "--audit-image", "Registry/App:1"], "--audit-image image reference"),
    (["--audit-cronjob", "--audit-image", IMAGE, "--audit-schedule", "* * * *"], "expected 5 fields"),
    (["--audit-cronjob", "--audit-image", IMAGE, "--audit-schedule", "61 * * * *"], "minute 61 is out of range 0-59"),
    (["--audit-cronjob", "--audit-image", IMAGE, "--audit-schedule", "0 5-2 * * *"], "hour range '5-2' runs backwards"),
    (["--audit-cronjob", "--audit-image", IMAGE, "--audit-schedule", "*/0 * * * *"], "step '0'"),
    (["--audit-cronjob", "--audit-image", IMAGE, "--audit-schedule", "0 0 * foo *"], "month 'foo' is not a number"),
    (["--audit-cronjob", "--audit-image", IMAGE, "--audit-schedule", "@every 1h"], "expected 5 fields"),
    (["--audit-cronjob", "--audit-image", IMAGE, "--audit-namespace", "Ops_1"], "not a valid namespace name"),
    (["--audit-cronjob", "--audit-image", IMAGE, "--audit-timezone", "Mars/Olympus"],
     "--audit-timezone 'Mars/Olympus' is not an IANA time zone name such as 'Europe/Berlin'"),
    (["--audit-cronjob", "--audit-image", IMAGE, "--audit-timezone", "europe/berlin"], "did you mean 'Europe/Berlin'"),
    (["--audit-cronjob", "--audit-image", IMAGE, "--audit-timezone", "CET+1"], "--audit-timezone 'CET+1' is not"),
    (["--audit-timezone", "UTC"], "--audit-timezone is an option of --audit-cronjob"),
])
def test_bad_options_are_refused_in_one_line_naming_the_fix(tmp_path, capsys, flags, said):
    with pytest.raises(SystemExit) as e:
        _export(tmp_path, capsys, *flags)
    err = capsys.readouterr().err
    assert e.value.code == 2 and said in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_timezone_is_the_cronjobs_and_without_it_there_is_none(tmp_path, capsys):
    code, _, err = _export(tmp_path, capsys, "--audit-cronjob", "--audit-image", IMAGE, "--audit-schedule",
                           "0 6 * * *", "--audit-timezone", "Europe/Berlin")
    assert code == 0, err
    (cron,) = [d for d in yaml.safe_load_all((tmp_path / "out" / A.FILE).read_text()) if d["kind"] == "CronJob"]
    assert cron["spec"]["schedule"] == "0 6 * * *" and cron["spec"]["timeZone"] == "Europe/Berlin"
    for version in VERSIONS:
        kubernetes_validate.validate(cron, version, strict=True)
    code, _, err = _export(tmp_path, capsys, "--audit-cronjob", "--audit-image", IMAGE, "--force")
    assert code == 0, err
    (cron,) = [d for d in yaml.safe_load_all((tmp_path / "out" / A.FILE).read_text()) if d["kind"] == "CronJob"]
    assert "timeZone" not in cron["spec"]  # the controller manager's zone, as before


@pytest.mark.parametrize("schedule", ["17 * * * *", "@daily", "0 0 1,15 * 0", "0 3 * jan-mar 7", "5-55/10 * * * *",
                                      "0 0 ? * *"])
def test_schedules_kubernetes_takes_are_taken(schedule):
    assert A.check_schedule(schedule) == schedule


def test_result_configmap_needs_json_and_a_valid_name(tmp_path, capsys):
    for flags, said in ((["--result-configmap", "ns/x", "--format", "text"], "--format json"),
                        (["--result-configmap", "x", "--format", "json"], "expected NAMESPACE/NAME")):
        with pytest.raises(SystemExit):
            main(["audit", "--plan", _plan(tmp_path), *flags])
        assert said in capsys.readouterr().err


def _cm(cluster: Cluster, name: str, ours: bool) -> None:
    labels = {"app.kubernetes.io/managed-by": "ghcr2gitea"} if ours else {"team": "ops"}
    cluster.request("POST", "/api/v1/namespaces/default/configmaps", content_type="application/json",
                    body={"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": name, "namespace": "default", "labels": labels}})


def test_the_result_writer_updates_only_the_wizards_named_configmap(sandbox):
    admin = Cluster.connect(str(sandbox.kubeconfig))
    reader = ClusterReader.connect(str(sandbox.kubeconfig))
    try:
        _cm(admin, "audit-result", ours=True)
        _cm(admin, "someone-elses", ours=False)
        w = A.ResultWriter(reader.api, "default", "audit-result", patience=5)
        before = len(mutating_requests(sandbox))
        w.write(A.Result('{"stages": []}', 1))
        data = admin.get("ConfigMap", "audit-result", "default")["data"]
        assert json.loads(data["audit.json"]) == {"stages": []} and data["exit-code"] == "1"
        assert mutating_requests(sandbox)[before:] == ["PUT /api/v1/namespaces/default/configmaps/audit-result"]
        with pytest.raises(ReadOnlyViolation):  # any other write: refused before it is sent
            w.request("PUT", "/api/v1/namespaces/default/configmaps/someone-elses", body={})
        with pytest.raises(A.ResultNotWritten, match="not labelled app.kubernetes.io/managed-by=ghcr2gitea"):
            A.ResultWriter(reader.api, "default", "someone-elses", patience=5).write(A.Result("{}", 0))
        with pytest.raises(A.ResultNotWritten, match="no such ConfigMap; apply audit-cronjob.yaml"):
            A.ResultWriter(reader.api, "default", "missing", patience=5).write(A.Result("{}", 0))
        assert "labels" in admin.get("ConfigMap", "someone-elses", "default")["metadata"]
        assert "data" not in admin.get("ConfigMap", "someone-elses", "default")
    finally:
        admin.close()
        reader.close()


@pytest.mark.parametrize("message, said", [
    ('nodes is forbidden: User "system:serviceaccount:a:b" cannot list resource "nodes" in API group "" at the '
     'cluster scope', "forbidden: list nodes"),
    ('deployments.apps is forbidden: User "x" cannot list resource "deployments" in API group "apps" in the '
     'namespace "default"', "forbidden: list deployments.apps in namespace default"),
    ('secrets "gitea-registry-push" is forbidden: User "x" cannot get resource "secrets" in API group "" in the '
     'namespace "default"', "forbidden: get secrets in namespace default"),
])
def test_a_refused_read_says_forbidden_verb_resource(message, said):
    from wizard.cluster import ApiError
    e = ApiError(403, "Forbidden", message)
    assert e.forbidden == said and str(e).startswith(said + " (") and message in str(e)
    assert ApiError(404, "NotFound", message).forbidden == ""
