"""The in-cluster audit's RBAC on a real kube-apiserver: ``export --audit-cronjob``'s objects applied, the
CronJob's container command run as its ServiceAccount (a token from the API server's TokenRequest), and its
rules shown sufficient (the audit runs, the result ConfigMap holds its JSON and exit code) and minimal
(without any one rule, or one verb of it, the audit fails naming "forbidden: <verb> <resource>"), with no
write but the result ConfigMap's update in the API server's audit log."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import poll

from wizard import auditcron as A

ROOT = Path(__file__).resolve().parents[2]
# the command `ghcr2gitea`, from this checkout (the container's image has it installed)
GHCR2GITEA = [sys.executable, "-m", "ghcr2gitea"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
REAL = pytest.mark.parametrize("world_api", ["real"], indirect=True)
SA_USER = f"system:serviceaccount:{A.DEFAULT_NAMESPACE}:{A.NAME}"


def _errors(run) -> str:
    """What made an audit exit 2, in a line each: its stderr, and every check whose cause names a refusal."""
    try:
        report = json.loads(run.stdout)
    except ValueError:
        return run.stderr
    stages = report.get("stages") or []
    stages = stages.values() if isinstance(stages, dict) else stages
    found = [f"{st.get('key', st.get('title'))}: {c.get('name')}: {c.get('cause')}" for st in stages
             for c in st.get("checks") or [] if c.get("status") == "fail"]
    return run.stderr + "\n".join(found)


def _sa_kubeconfig(sandbox, token: str, path: Path) -> Path:
    """The sandbox's kubeconfig (its server, CA and context name, which the plan names) with the SA's token."""
    cfg = yaml.safe_load(sandbox.kubeconfig.read_text())
    for u in cfg["users"]:
        u["user"] = {"token": token}
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


class World:
    def __init__(self, sandbox, tmp_path: Path):
        from kubernetes import client

        from wizard.kube import api_client
        self.sb, self.tmp = sandbox, tmp_path
        self.api = api_client(str(sandbox.kubeconfig))
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.authz = client.AuthorizationV1Api(self.api)

    def sar(self, verb: str, resource: str, group: str, namespace: str = "", name: str = "") -> bool:
        """Whether RBAC (as the API server authorises right now) lets the SA do it."""
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": SA_USER, "groups": ["system:serviceaccounts",
                                                     f"system:serviceaccounts:{A.DEFAULT_NAMESPACE}",
                                                     "system:authenticated"],
                         "resourceAttributes": {"verb": verb, "resource": resource, "group": group,
                                                "namespace": namespace, "name": name}}}
        return self.authz.create_subject_access_review(body).status.allowed

    def audit(self, mount: Path, command: list[str], kubeconfig: Path) -> subprocess.CompletedProcess:
        """The CronJob's container command, as it runs in the pod: in the plan's mount, no Gitea token."""
        env = {k: v for k, v in ENV.items() if k not in ("GITEA_TOKEN", "GHCR_TOKEN", "KUBECONFIG")}
        env.update(KUBECONFIG=str(kubeconfig), HOME=str(self.tmp))
        return subprocess.run([*GHCR2GITEA, *command[1:]], cwd=mount, env=env, capture_output=True, text=True, timeout=180)

    def result(self) -> dict:
        return self.core.read_namespaced_config_map(A.RESULT, A.DEFAULT_NAMESPACE).data or {}


def _causes(report: dict) -> list[str]:
    return [c.get("cause") or "" for st in report["stages"] for c in st["checks"]]


@REAL
def test_the_exported_rbac_is_sufficient_and_minimal_and_its_only_write_is_the_result(sandbox, kubectl, tmp_path,
                                                                                      monkeypatch, capsys):
    out = tmp_path / "export"
    res = subprocess.run([*GHCR2GITEA, "export", "--plan", str(sandbox.plan), "--kubeconfig", str(sandbox.kubeconfig),
                          "--dir", str(out), "--audit-cronjob", "--audit-image", "registry.example.test/ghcr2gitea:0.1",
                          "--audit-schedule", "@yearly"], capture_output=True, text=True, timeout=60, env=ENV)
    assert res.returncode == 0, res.stderr
    docs = list(yaml.safe_load_all((out / A.FILE).read_text()))
    assert all(d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ghcr2gitea" for d in docs)
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    cron = by[("CronJob", A.NAME)]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "--node-probes" not in container["command"] and not container["securityContext"]["privileged"]
    every_rule = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    assert {v for r in every_rule for v in r["verbs"]} <= {"get", "list", "update"}
    pods = [(d["metadata"], r) for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]
            if r["resources"][0].startswith("pods")]  # only a list of pods, only in the workloads namespace
    assert [(md["namespace"], r["resources"], r["verbs"]) for md, r in pods] == [("default", ["pods"], ["list"])]
    kubectl("apply", "--server-side", "-f", str(out / A.FILE))

    w = World(sandbox, tmp_path)
    try:
        token = w.core.create_namespaced_service_account_token(
            A.NAME, A.DEFAULT_NAMESPACE, {"spec": {"expirationSeconds": 3600}}).status.token
        kc = _sa_kubeconfig(sandbox, token, tmp_path / "sa.kubeconfig")
        mount = tmp_path / "mount"  # the plan ConfigMap as the pod mounts it (the container's working directory)
        mount.mkdir()
        for name, text in by[("ConfigMap", A.PLAN_CM)]["data"].items():
            (mount / name).write_text(text)
        assert container["workingDir"] == A.MOUNT
        sandbox.plane.requests()  # read the audit log up to here: what follows is the SA's

        # sufficient: the fresh world's findings (exit 1), every stage checked, the JSON in the ConfigMap
        run = w.audit(mount, container["command"], kc)
        assert run.returncode == 1, _errors(run)
        report = json.loads(run.stdout)
        assert report["stages"] and not [c for c in _causes(report) if "forbidden" in c or "could not" in c]
        data = w.result()
        assert json.loads(data["audit.json"]) == report and data["exit-code"] == "1"

        # minimal: without each rule (each verb of a rule with several), the audit names what it lacked
        roles = [("ClusterRole", A.NAME, None)] + [("Role", d["metadata"]["name"], d["metadata"]["namespace"])
                                                    for d in docs if d["kind"] == "Role"]
        tried = 0
        for kind, name, ns in roles:
            role = by[(kind, name)]
            for i, rule in enumerate(role["rules"]):
                for verb in rule["verbs"]:
                    tried += 1
                    _without(w, kind, name, ns, role, i, verb)
                    run = w.audit(mount, container["command"], kc)
                    resource = rule["resources"][0]
                    want = f"forbidden: {verb} {resource}"
                    assert run.returncode == 2, (want, run.returncode, run.stderr[-500:])
                    said = run.stderr if resource == "configmaps" and name.endswith("-result") else \
                        " ".join(_causes(json.loads(run.stdout)))
                    assert want in said, (want, said[-800:])
                    assert "Traceback" not in run.stderr
                    _restore(w, kind, name, ns, role, i, verb)
        assert tried == sum(len(r["verbs"]) for r in every_rule)

        # after the migration, the same identity audits it clean: exit 0, and the ConfigMap says so
        from ghcr2gitea.cli import main
        assert main(["apply", "--plan", str(sandbox.plan), "--kubeconfig", str(sandbox.kubeconfig), "--token-file",
                     str(sandbox.token_file), "--yes"]) == 0
        sandbox.plane.requests()
        run = w.audit(mount, container["command"], kc)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr
        assert w.result()["exit-code"] == "0"

        # as in the pod: no kubeconfig, the in-cluster configuration (service host, the SA's token and CA files)
        sa_dir = tmp_path / "serviceaccount"
        sa_dir.mkdir()
        (sa_dir / "token").write_text(token)
        (sa_dir / "ca.crt").write_bytes((sandbox.plane.dir / "ca.crt").read_bytes())
        monkeypatch.setattr("wizard.kube.SERVICE_ACCOUNT_DIR", sa_dir)
        monkeypatch.delenv("KUBECONFIG", raising=False)
        monkeypatch.delenv("GITEA_TOKEN", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(sandbox.plane.api_port))
        monkeypatch.chdir(mount)
        before = len([r for r in sandbox.plane.requests() if r["user"] == SA_USER])
        capsys.readouterr()
        assert main(container["command"][1:]) == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["cluster"]["server"] == sandbox.plane.url
        assert len([r for r in sandbox.plane.requests() if r["user"] == SA_USER]) > before  # it was the SA

        # every request the SA made was a read, but the result ConfigMap's updates (one per audit that got there)
        mine = [r for r in sandbox.plane.requests() if r["user"] == SA_USER]
        writes = [r for r in mine if r["method"] != "GET"]
        result_path = f"/api/v1/namespaces/{A.DEFAULT_NAMESPACE}/configmaps/{A.RESULT}"
        assert writes and {(r["method"], r["path"]) for r in writes} == {("PUT", result_path)}
        assert not [r for r in mine if "watch=" in r["query"]]
        assert {r["path"] for r in mine if "/pods" in r["path"]} <= {"/api/v1/namespaces/default/pods"}
    finally:
        w.api.close()


def _sar_args(kind: str, ns: str | None, rule: dict, verb: str) -> tuple:
    names = rule.get("resourceNames") or [""]
    return verb, rule["resources"][0], rule["apiGroups"][0], ns or "", names[0]


def _set_rules(w: World, kind: str, name: str, ns: str | None, rules: list[dict]) -> None:
    body = {"rules": rules}
    if kind == "ClusterRole":
        w.rbac.patch_cluster_role(name, body)
    else:
        w.rbac.patch_namespaced_role(name, ns, body)


def _without(w: World, kind, name, ns, role, i, verb) -> None:
    rules = copy.deepcopy(role["rules"])
    rules[i]["verbs"].remove(verb)
    if not rules[i]["verbs"]:
        del rules[i]
    _set_rules(w, kind, name, ns, rules)
    poll(lambda: not w.sar(*_sar_args(kind, ns, role["rules"][i], verb)), timeout=30,
         what=f"RBAC denying {verb} {role['rules'][i]['resources']}")


def _restore(w: World, kind, name, ns, role, i, verb) -> None:
    _set_rules(w, kind, name, ns, role["rules"])
    poll(lambda: w.sar(*_sar_args(kind, ns, role["rules"][i], verb)), timeout=30,
         what=f"RBAC allowing {verb} {role['rules'][i]['resources']} again")
