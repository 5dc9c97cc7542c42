"""Issue 11 §3: nothing the wizard does not own is changed.

Another team's objects that happen to carry the plan's names are conflicts in `plan`, stop `apply`
before any write and are left byte for byte; `--adopt` is the only way past, and it is journalled.
The start-up sweep deletes only the wizard's own node pods, the node-registries Secret only when it is
the wizard's, and a 422 from the API names the object and the field.
"""

from __future__ import annotations

import json

import pytest
from helpers import mutating_requests, poll, run_cli, sandbox_state

from wizard.cluster import ApiError, Cluster
from wizard.nodeexec import NodeExec, pod_manifest
from wizard.ownership import NotOwned

OTHER_TEAM = "kubectl-client-side-apply"
SECRET = ("Secret", "default", "gitea-registry-push")
CONFIGMAP = ("ConfigMap", "default", "gitea-proxy-ca")
DEPLOYMENT = ("Deployment", "default", "gitea-auth-proxy")
INGRESS = ("Ingress", "gitea-system", "gitea-k3s-alias-tls")
THEIRS = (SECRET, CONFIGMAP, DEPLOYMENT, INGRESS)


def plan_args(sb) -> list[str]:
    return ["--plan", str(sb.plan), "--kubeconfig", str(sb.kubeconfig)]


def adopt_args(refs) -> list[str]:
    return [a for kind, ns, name in refs for a in ("--adopt", f"{kind}/{ns}/{name}")]


@pytest.fixture
def cluster(sandbox):
    c = Cluster.connect(str(sandbox.kubeconfig), patience=10)
    yield c
    c.close()


def create_as(cluster: Cluster, obj: dict, manager: str = OTHER_TEAM) -> dict:
    """An object written by someone else (no ghcr2gitea label), as kubectl would create it."""
    from wizard.cluster import kind_of
    md = obj["metadata"]
    return cluster.request("POST", kind_of(obj).path(md.get("namespace")), body=obj,
                           query={"fieldManager": manager}, content_type="application/json")


def other_teams_objects(cluster: Cluster) -> None:
    import base64
    auths = {"auths": {"registry.other-team.example": {"username": "ci", "password": "theirs", "auth": "Y2k6dGhlaXJz"}}}
    create_as(cluster, {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                        "metadata": {"name": SECRET[2], "namespace": SECRET[1], "labels": {"team": "payments"}},
                        "data": {".dockerconfigjson": base64.b64encode(json.dumps(auths).encode()).decode()}})
    create_as(cluster, {"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": CONFIGMAP[2], "namespace": CONFIGMAP[1]},
                        "data": {"ca.crt": "the payments team's CA bundle\n"}})
    labels = {"app": "gitea-auth-proxy"}
    create_as(cluster, {"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": DEPLOYMENT[2], "namespace": DEPLOYMENT[1], "labels": {"team": "payments"}},
                        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": [{"name": "nginx", "image": "payments/edge-proxy:4.2"}]}}}})
    create_as(cluster, {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                        "metadata": {"name": INGRESS[2], "namespace": INGRESS[1]},
                        "spec": {"rules": [{"host": "payments.example.test", "http": {"paths": [{
                            "path": "/", "pathType": "Prefix",
                            "backend": {"service": {"name": "payments", "port": {"number": 80}}}}]}}]}})


def snapshot(cluster: Cluster, refs=THEIRS) -> dict:
    return {f"{k} {ns}/{n}": json.dumps(cluster.get(k, n, ns), sort_keys=True) for k, ns, n in refs}


def journal_events(sb) -> list[dict]:
    files = list((sb.dir / "xdg-state" / "ghcr2gitea").glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())["events"]


def test_other_teams_objects_are_conflicts_apply_stops_before_any_write_and_adopt_proceeds(sandbox, cluster):
    other_teams_objects(cluster)
    # their Deployment's pod starts (its controller writes status): the snapshot is of the settled object
    kind, ns, name = DEPLOYMENT
    poll(lambda: (cluster.get(kind, name, ns).get("status") or {}).get("readyReplicas") == 1, timeout=30,
         what="the other team's Deployment ready")
    before = snapshot(cluster)

    res = run_cli(sandbox, "plan", *plan_args(sandbox))
    assert res.returncode == 3, res.stdout + res.stderr  # pending (conflicts are not "nothing to change")
    out = res.stdout
    assert (f"conflict Secret default/gitea-registry-push: exists and is not managed by ghcr2gitea (owned by field "
            f"managers: {OTHER_TEAM}); rename it in the plan (secrets.push) or adopt it with --adopt "
            "Secret/default/gitea-registry-push") in out
    assert "conflict ConfigMap default/gitea-proxy-ca:" in out and "(proxy.ca_configmap)" in out
    assert "conflict Deployment default/gitea-auth-proxy:" in out and "--adopt Deployment/default/gitea-auth-proxy" in out
    assert "conflict Ingress gitea-system/gitea-k3s-alias-tls:" in out and "(ingress.name)" in out
    assert "4 conflict(s)" in out

    seen = len(sandbox_state(sandbox)["requests"])
    res = run_cli(sandbox, "apply", *plan_args(sandbox), "--yes")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "checked before anything was written" in res.stdout
    for kind, ns, name in THEIRS:
        assert f"conflict {kind} {ns}/{name}: exists and is not managed by ghcr2gitea" in res.stdout
        assert f"--adopt {kind}/{ns}/{name}" in res.stdout
    requests = sandbox_state(sandbox)["requests"][seen:]
    writes = [f"{r['method']} {r['path']}" for r in requests if r["method"] in ("POST", "PUT", "PATCH", "DELETE")
              and "/leases" not in r["path"]]
    assert writes == []
    assert snapshot(cluster) == before  # byte for byte, resourceVersion and managedFields included

    res = run_cli(sandbox, "apply", *plan_args(sandbox), "--yes", *adopt_args(THEIRS))
    assert res.returncode == 0, res.stdout + res.stderr
    adopted = [(e["kind"], e["namespace"], e["name"]) for e in journal_events(sandbox) if e["type"] == "adopted"]
    assert sorted(adopted) == sorted(THEIRS)
    for kind, ns, name in THEIRS:  # adopted, so from now on the wizard's (and the next plan has no conflict)
        assert cluster.get(kind, name, ns)["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ghcr2gitea"
    again = run_cli(sandbox, "plan", *plan_args(sandbox))
    assert again.returncode == 0 and "conflict" not in again.stdout, again.stdout


def test_adopt_with_a_bad_reference_is_one_line_naming_the_value_and_the_fix(sandbox):
    res = run_cli(sandbox, "plan", *plan_args(sandbox), "--adopt", "Secret/gitea-registry-push")
    assert res.returncode == 2
    assert "'Secret/gitea-registry-push'" in res.stderr and "KIND/NAMESPACE/NAME" in res.stderr
    assert "Traceback" not in res.stderr


def test_the_write_layer_refuses_an_object_it_does_not_own(sandbox, cluster):
    other_teams_objects(cluster)
    before = snapshot(cluster)
    desired = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIGMAP[2], "namespace": "default"},
               "data": {"ca.crt": "ours"}}
    for attempt in (lambda: cluster.apply(desired, "proxy"),
                    lambda: cluster.patch("ConfigMap", CONFIGMAP[2], "default", {"data": {"x": "y"}}),
                    lambda: cluster.delete("Secret", SECRET[2], "default")):
        with pytest.raises(NotOwned) as e:
            attempt()
        assert "--adopt" in str(e.value) and "is not managed by ghcr2gitea" in str(e.value)
    assert snapshot(cluster) == before


def test_sweep_removes_only_the_wizards_own_leftover_node_pods(sandbox, cluster):
    node = "dellmini1"
    mine = pod_manifest(node, "true", namespace="kube-system", image="alpine:3.20", stage="registries",
                        purpose="facts", run_id="a1a1a1a1")
    in_default = pod_manifest(node, "true", namespace="default", image="alpine:3.20", stage="registries",
                              purpose="facts", run_id="b2b2b2b2")
    other_image = pod_manifest(node, "true", namespace="kube-system", image="busybox:1.36", stage="registries",
                               purpose="facts", run_id="c3c3c3c3")
    other_command = pod_manifest(node, "true", namespace="kube-system", image="alpine:3.20", stage="registries",
                                 purpose="facts", run_id="d4d4d4d4")
    other_command["spec"]["containers"][0]["command"] = ["sh", "-c", "sleep 3600"]
    for pod in (mine, in_default, other_image, other_command):
        create_as(cluster, pod)  # written as the labels say; a user's copy of them
    swept = NodeExec(cluster, namespace="kube-system", image="alpine:3.20").sweep()
    assert swept.removed == [f"kube-system/{mine['metadata']['name']}"]
    left = " ".join(swept.left_alone)
    for pod in (in_default, other_image, other_command):
        md = pod["metadata"]
        assert f"{md['namespace']}/{md['name']}" in left
        assert cluster.get("Pod", md["name"], md["namespace"]) is not None
    assert "not in the wizard namespace" in left and "busybox:1.36" in left and "nsenter command" in left
    # the same sweep at the start of apply says so, and still leaves them
    res = run_cli(sandbox, "apply", *plan_args(sandbox), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "left alone: looks like the wizard's but is not: " in res.stdout
    for pod in (in_default, other_image, other_command):
        assert f"{pod['metadata']['namespace']}/{pod['metadata']['name']}" in res.stdout
        assert cluster.get("Pod", pod["metadata"]["name"], pod["metadata"]["namespace"]) is not None


def test_another_owners_node_registries_secret_is_not_deleted(sandbox, cluster):
    theirs = create_as(cluster, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                 "metadata": {"name": "ghcr2gitea-node-registries", "namespace": "kube-system"},
                                 "data": {"note": "dGhlaXJz"}})
    res = run_cli(sandbox, "apply", *plan_args(sandbox), "--yes")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "conflict Secret kube-system/ghcr2gitea-node-registries" in res.stdout
    assert "--adopt Secret/kube-system/ghcr2gitea-node-registries" in res.stdout
    live = cluster.get("Secret", "ghcr2gitea-node-registries", "kube-system")
    assert live is not None and live["metadata"]["uid"] == theirs["metadata"]["uid"]
    assert live["data"] == {"note": "dGhlaXJz"}
    assert not [m for m in mutating_requests(sandbox) if "ghcr2gitea-node-registries" in m]


def test_an_immutable_field_names_the_object_and_the_field(sandbox, cluster):
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "x", "namespace": "default"},
              "data": {"a": "Yg=="}}
    cluster.apply(secret, "secrets")
    with pytest.raises(ApiError) as e:
        cluster.apply({**secret, "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}},
                      "secrets")
    assert e.value.status == 422 and e.value.reason == "Invalid"
    assert e.value.causes == [{"reason": "FieldValueInvalid", "field": "type",
                               "message": 'Invalid value: "kubernetes.io/dockerconfigjson": field is immutable'}]
    assert str(e.value).startswith("Secret default/x: field type: field is immutable")
    assert cluster.get("Secret", "x", "default")["type"] == "Opaque"


def test_apply_onto_an_adopted_secret_of_another_type_fails_as_a_stage_naming_the_field(sandbox, cluster):
    create_as(cluster, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": SECRET[2], "namespace": SECRET[1]}, "data": {"a": "Yg=="}})
    res = run_cli(sandbox, "apply", *plan_args(sandbox), "--yes", *adopt_args([SECRET]))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "[3/11] Registry secrets: FAILED" in res.stdout
    assert "Secret default/gitea-registry-push: field type: field is immutable" in res.stdout
    assert "internal error" not in res.stdout + res.stderr


def test_a_lease_taken_over_from_a_dead_run_stays_the_wizards_and_is_released(sandbox, cluster):
    """The take-over PUT replaces the Lease's labels: it must keep the mark, or renewals and the release would be
    refused as "not the wizard's" and the lock would linger."""
    import socket

    from wizard.lock import LEASE_NAME, LEASE_NAMESPACE, ClusterLock
    dead = ClusterLock(cluster)
    dead.me = f"someone@{socket.gethostname()} pid=999999999"  # a process of this machine that is gone
    dead.acquire()
    dead._stop.set()
    lock = ClusterLock(cluster)
    lock.acquire()
    lease = cluster.get("Lease", LEASE_NAME, LEASE_NAMESPACE)
    assert lease["spec"]["holderIdentity"] == lock.me
    assert lease["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ghcr2gitea"
    lock.release()
    assert cluster.get("Lease", LEASE_NAME, LEASE_NAMESPACE) is None


def test_the_wizard_stops_on_a_conflict_and_adopts_only_when_the_name_is_typed(sandbox, cluster):
    from screens.demo import demo_session
    create_as(cluster, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIGMAP[2], "namespace": "default"},
                        "data": {"ca.crt": "the payments team's CA bundle\n"}})
    before = snapshot(cluster, [CONFIGMAP])
    s = demo_session(sandbox)
    try:
        i = s.index("proxy")
        s.current = i
        s.inspect_stage(i)
        assert [c.action for c in s.plan_stage(i) if c.target == "ConfigMap default/gitea-proxy-ca"] == ["conflict"]
        assert s.apply_stage(i) is False
        err = s.states[i].error
        assert "ConfigMap default/gitea-proxy-ca: exists and is not managed by ghcr2gitea" in err.cause
        assert "press t to adopt" in err.fix and "--adopt ConfigMap/default/gitea-proxy-ca" in err.fix
        assert snapshot(cluster, [CONFIGMAP]) == before
        assert cluster.get("Secret", "gitea-proxy-tls", "default") is None  # stopped before the stage's first write
        with pytest.raises(ValueError, match="type the object's name 'gitea-proxy-ca'"):
            s.adopt("ConfigMap", "default", "gitea-proxy-ca", "proxy")
        s.adopt("ConfigMap", "default", "gitea-proxy-ca", "gitea-proxy-ca")
        s.inspect_stage(i)
        planned = {c.target: c for c in s.plan_stage(i)}
        assert planned["ConfigMap default/gitea-proxy-ca"].action == "update"
        assert planned["ConfigMap default/gitea-proxy-ca"].note.startswith("adopting it")
        events = [e for e in s.journal.events if e["type"] == "adopted"]
        assert [(e["kind"], e["namespace"], e["name"], e["typed"]) for e in events] == [
            ("ConfigMap", "default", "gitea-proxy-ca", "gitea-proxy-ca")]
    finally:
        s.close()


def test_the_operators_runner_role_gets_only_the_missing_rules_and_keeps_its_own(sandbox, cluster):
    """The runner's Role is the operator's (the plan names it in ci.role): extended, never taken over."""
    from wizard.stages.ci_rbac import RUNNER_RULES
    own = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
    cluster.request("PATCH", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/gwa-actions-runner",
                    body=[{"op": "add", "path": "/rules/-", "value": own}], query={"fieldManager": OTHER_TEAM},
                    content_type="application/json-patch+json")
    res = run_cli(sandbox, "apply", *plan_args(sandbox), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    role = cluster.get("Role", "gwa-actions-runner", "default")
    assert own in role["rules"]
    assert all(r in role["rules"] for r in RUNNER_RULES)
    assert "app.kubernetes.io/managed-by" not in (role["metadata"].get("labels") or {})


def test_adopt_references_parse_as_kubectl_spells_kinds():
    from wizard.ownership import Ref, parse_ref
    assert parse_ref("secret/default/gitea-registry-push") == Ref("Secret", "default", "gitea-registry-push")
    assert parse_ref("Namespace/team-a") == Ref("Namespace", "", "team-a")
    for bad in ("Secret/x", "Node/a/b", "Foo/a/b", "Secret/Default/x", "Secret/default/x/y", "Secret//x"):
        with pytest.raises(ValueError, match="--adopt"):
            parse_ref(bad)


def test_a_runner_rolebinding_of_another_role_is_a_conflict_named_by_its_plan_key(sandbox, cluster):
    cluster.request("DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/gwa-actions-runner")
    create_as(cluster, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": {"name": "gwa-actions-runner", "namespace": "default"},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "payments-ci"},
                        "subjects": [{"kind": "ServiceAccount", "name": "payments", "namespace": "default"}]})
    res = run_cli(sandbox, "apply", *plan_args(sandbox), "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    assert ("conflict RoleBinding default/gwa-actions-runner: exists and is not managed by ghcr2gitea (owned by field "
            f"managers: {OTHER_TEAM}); rename it in the plan (ci.role)") in res.stdout
    assert "1 conflict(s): apply stops before any write" in res.stdout
