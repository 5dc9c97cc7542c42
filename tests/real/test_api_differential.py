"""Differential conformance: the same API behaviours the wizard relies on, against the sandbox's own API server
and a real kube-apiserver (built from k8s.io/kubernetes by scripts/build-real). The real one is the oracle;
every behaviour here must agree, and known divergences are listed in docs/sandbox.md.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from wizard.cluster import ApiError, Cluster


@pytest.fixture(params=["sandbox", "real"])
def api(request, make_sandbox):
    """A read-write connection (the wizard's own client) to one of the two API servers, and a fresh namespace."""
    if request.param == "sandbox":
        sb = make_sandbox()
        kubeconfig = str(sb.kubeconfig)
    else:
        kubeconfig = str(request.getfixturevalue("real_plane").kubeconfig())
    c = Cluster.connect(kubeconfig, patience=10)
    # one namespace per test and parameter (the real server is shared by the module)
    tag = hashlib.sha256(request.node.name.encode()).hexdigest()[:6]
    ns = f"diff-{request.node.name.split('[')[0][5:30].replace('_', '-')}".rstrip("-") + f"-{tag}"
    c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, "test")
    yield c, ns
    c.close()


def _secret(ns, name="s", type_="Opaque", **data):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "type": type_,
            "stringData": data or {"k": "v"}}


def _deployment(ns, name="web", app="web", image="ghcr.io/jaybrto/gwa-webhook:latest"):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}},
                     "template": {"metadata": {"labels": {"app": app}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def _error(fn) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn()
    return info.value


def test_secret_type_is_immutable(api):
    c, ns = api
    c.apply(_secret(ns), "test")
    e = _error(lambda: c.apply(_secret(ns, type_="kubernetes.io/dockerconfigjson",
                                       **{".dockerconfigjson": "{}"}), "test"))
    assert (e.status, e.reason) == (422, "Invalid")
    assert "field is immutable" in e.message and "type" in e.message


def test_deployment_selector_is_immutable(api):
    c, ns = api
    c.apply(_deployment(ns), "test")
    e = _error(lambda: c.apply(_deployment(ns, app="other"), "test"))
    assert (e.status, e.reason) == (422, "Invalid")
    assert "selector" in e.message and "immutable" in e.message


def test_create_twice_is_already_exists_and_missing_is_not_found(api):
    c, ns = api
    c.create(_secret(ns), "test")
    e = _error(lambda: c.create(_secret(ns), "test"))
    assert (e.status, e.reason) == (409, "AlreadyExists")
    assert c.get("Secret", "nope", ns) is None
    e = _error(lambda: c.request("GET", f"/api/v1/namespaces/{ns}/secrets/nope"))
    assert (e.status, e.reason) == (404, "NotFound")


def test_stringdata_becomes_data_and_server_fields_are_set(api):
    c, ns = api
    obj = c.create(_secret(ns, k="value"), "test")
    assert obj["data"] == {"k": "dmFsdWU="} and "stringData" not in obj
    md = obj["metadata"]
    assert md["uid"] and md["resourceVersion"] and md["creationTimestamp"].endswith("Z")


def test_label_and_field_selectors(api):
    c, ns = api
    for name, team in (("a", "x"), ("b", "y"), ("c", "x")):
        s = _secret(ns, name=name)
        s["metadata"]["labels"] = {"team": team}
        c.create(s, "test")
    assert sorted(s["metadata"]["name"] for s in c.list("Secret", ns, labels="team=x")) == ["a", "c"]
    assert sorted(s["metadata"]["name"] for s in c.list("Secret", ns, labels="team!=x")) == ["b"]
    assert [s["metadata"]["name"] for s in c.list("Secret", ns, fields="metadata.name=b")] == ["b"]


def test_server_side_apply_conflicts_without_force_and_records_managers(api):
    c, ns = api
    c.apply(_deployment(ns), "test")
    other = _deployment(ns, image="nginx:1")
    body = json.dumps(other)
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    e = _error(lambda: c.request("PATCH", path, query={"fieldManager": "another-team"}, body=body,
                                 content_type="application/apply-patch+yaml"))
    assert (e.status, e.reason) == (409, "Conflict")
    live = c.request("PATCH", path, query={"fieldManager": "another-team", "force": "true"}, body=body,
                     content_type="application/apply-patch+yaml")
    managers = {m["manager"] for m in live["metadata"]["managedFields"]}
    assert {"ghcr2gitea", "another-team"} <= managers
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1"


def test_patch_types(api):
    c, ns = api
    c.apply(_deployment(ns), "test")
    d = c.patch("Deployment", "web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "registry.example.test/jaybrto/gwa-webhook:latest"}]}}}})
    assert d["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.example.test/")
    d = c.patch("Deployment", "web", ns, {"metadata": {"annotations": {"a": "1"}}}, patch_type="merge")
    assert d["metadata"]["annotations"]["a"] == "1"
    d = c.patch("Deployment", "web", ns, [{"op": "replace", "path": "/spec/replicas", "value": 2}],
                patch_type="json")
    assert d["spec"]["replicas"] == 2
    e = _error(lambda: c.patch("Deployment", "web", ns, [{"op": "test", "path": "/spec/replicas", "value": 5}],
                               patch_type="json"))
    assert e.status == 422


def test_namespace_path_is_the_namespace_itself(api):
    c, ns = api
    got = c.request("GET", f"/api/v1/namespaces/{ns}")
    assert got["kind"] == "Namespace" and got["metadata"]["name"] == ns


def test_watch_from_a_resource_version_sees_later_changes(api):
    c, ns = api
    _, rv = c.list_with_rv("Secret", ns)
    c.create(_secret(ns, name="w"), "test")
    seen = []
    for etype, obj in c.watch("Secret", ns, resource_version=rv, timeout=5):
        if etype == "BOOKMARK":
            continue
        seen.append((etype, obj["metadata"]["name"]))
        break
    assert seen == [("ADDED", "w")]


def test_event_field_selectors_the_restart_proof_uses(api):
    c, ns = api
    # events about a cluster-scoped object (a Node) live in "default" (the API refuses them elsewhere)
    for i, (obj, reason) in enumerate(((f"{ns}-n1", "Starting"), (f"{ns}-n1", "NodeReady"), (f"{ns}-n3", "Starting"))):
        c.create({"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{ns}-e{i}", "namespace": "default"},
                  "involvedObject": {"kind": "Node", "name": obj, "apiVersion": "v1"}, "reason": reason,
                  "message": "m", "type": "Normal", "source": {"component": "kubelet"},
                  "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"}, "test")
    got = c.list("Event", None, fields=f"involvedObject.name={ns}-n1,reason=Starting")
    assert [e["metadata"]["name"] for e in got] == [f"{ns}-e0"]
    e = _error(lambda: c.create({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "x", "namespace": ns},
                                 "involvedObject": {"kind": "Node", "name": "n", "apiVersion": "v1"},
                                 "reason": "Starting", "message": "m", "type": "Normal"}, "test"))
    assert (e.status, e.reason) == (422, "Invalid") and "involvedObject.namespace" in e.message


def test_pod_status_is_patched_through_the_status_subresource(api):
    c, ns = api
    if c.get("ServiceAccount", "default", ns) is None:  # the controller-manager makes it; it may not run here
        c.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}},
                 "test")
    # bound to a node nothing plays, so no kubelet (simulated or not) runs it
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
           "spec": {"nodeName": "no-such-node", "restartPolicy": "Never", "automountServiceAccountToken": False,
                    "containers": [{"name": "c", "image": "alpine:3.20", "command": ["true"]}]}}
    c.create(pod, "test")
    # a status in the main resource is ignored; /status takes it (what a kubelet or kwok does)
    c.patch("Pod", "p", ns, {"status": {"phase": "Succeeded"}}, patch_type="merge")
    assert (c.get("Pod", "p", ns).get("status") or {}).get("phase") in (None, "Pending")
    c.request("PATCH", f"/api/v1/namespaces/{ns}/pods/p/status", body={"status": {"phase": "Succeeded"}},
              content_type="application/merge-patch+json")
    assert c.get("Pod", "p", ns)["status"]["phase"] == "Succeeded"
    assert c.delete("Pod", "p", ns) is True  # gracePeriodSeconds 0: gone at once, no kubelet needed
    assert c.get("Pod", "p", ns) is None


def test_list_pagination_with_limit_and_continue(api):
    c, ns = api
    for i in range(5):
        c.create(_secret(ns, name=f"p{i}"), "test")
    first = c.request("GET", f"/api/v1/namespaces/{ns}/secrets", query={"limit": 2})
    assert len(first["items"]) == 2 and first["metadata"].get("continue")
    names = [s["metadata"]["name"] for s in first["items"]]
    token = first["metadata"]["continue"]
    while token:
        page = c.request("GET", f"/api/v1/namespaces/{ns}/secrets", query={"limit": 2, "continue": token})
        names += [s["metadata"]["name"] for s in page["items"]]
        token = page["metadata"].get("continue")
    assert sorted(n for n in names if n.startswith("p")) == [f"p{i}" for i in range(5)]


def test_a_uid_in_an_apply_is_a_precondition(api):
    """The wizard pins its apply of an object it owns to the uid it checked: a replaced object is refused."""
    c, ns = api
    path = f"/api/v1/namespaces/{ns}/configmaps/cm"

    def apply(uid: str | None, value: str):
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": ns}, "data": {"k": value}}
        if uid:
            body["metadata"]["uid"] = uid
        return c.request("PATCH", path, query={"fieldManager": "test", "force": "true"}, body=json.dumps(body),
                         content_type="application/apply-patch+yaml")
    stranger = "6a0e3b0c-1d5e-4c8f-9a51-7d2f0e9b1c33"
    e = _error(lambda: apply(stranger, "1"))  # no object: a uid cannot match, nothing is created
    assert (e.status, e.reason) == (409, "Conflict") and "uid mismatch" in e.message
    assert c.get("ConfigMap", "cm", ns) is None
    live = apply(None, "1")
    assert apply(live["metadata"]["uid"], "2")["data"] == {"k": "2"}
    e = _error(lambda: apply(stranger, "3"))  # the object the uid named was replaced: refused
    assert (e.status, e.reason) == (422, "Invalid") and "metadata.uid" in e.message, e.message
    assert "field is immutable" in e.message
    assert c.get("ConfigMap", "cm", ns)["data"] == {"k": "2"}


def test_a_put_with_another_objects_uid_is_refused(api):
    c, ns = api
    live = c.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": ns},
                     "data": {"k": "1"}}, "test")
    body = dict(live, data={"k": "2"}, metadata=dict(live["metadata"], uid="6a0e3b0c-1d5e-4c8f-9a51-7d2f0e9b1c33"))
    e = _error(lambda: c.request("PUT", f"/api/v1/namespaces/{ns}/configmaps/cm", body=body,
                                 content_type="application/json"))
    assert (e.status, e.reason) == (409, "Conflict"), (e.status, e.message)
    assert "Precondition failed: UID in precondition: 6a0e3b0c-1d5e-4c8f-9a51-7d2f0e9b1c33" in e.message
    assert c.get("ConfigMap", "cm", ns)["data"] == {"k": "1"}



def test_an_update_without_a_resource_version_is_refused_for_a_lease_only(api):
    """kube-apiserver's Lease strategy refuses an unconditional update (the node agent's renewals and the wizard's
    lock must name the revision they replace); a ConfigMap's takes the newest copy."""
    c, ns = api
    for kind, path, body in (
            ("Lease", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/l",
             {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "a"}}),
            ("ConfigMap", f"/api/v1/namespaces/{ns}/configmaps/cm",
             {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "1"}})):
        name = path.rsplit("/", 1)[1]
        live = c.create({**body, "metadata": {"name": name, "namespace": ns}}, "test")
        unconditional = dict(live, metadata={k: v for k, v in live["metadata"].items() if k != "resourceVersion"})
        unconditional["metadata"]["labels"] = {**live["metadata"].get("labels", {}), "changed": "yes"}
        if kind == "Lease":
            e = _error(lambda p=path, b=unconditional: c.request("PUT", p, body=b, content_type="application/json"))
            assert (e.status, e.reason) == (422, "Invalid"), (e.status, e.message)
            assert "metadata.resourceVersion: Invalid value: 0: must be specified for an update" in e.message
            assert "changed" not in c.get(kind, name, ns)["metadata"]["labels"]
        else:
            c.request("PUT", path, body=unconditional, content_type="application/json")
            assert c.get(kind, name, ns)["metadata"]["labels"]["changed"] == "yes"


def test_an_apply_with_an_impossible_resource_version_only_creates(api):
    """The wizard's create of an object it found absent: etcd never gives an object resourceVersion 1, so an
    apply that carries it creates the object when there is none and is refused when one appeared meanwhile."""
    c, ns = api
    path = f"/api/v1/namespaces/{ns}/configmaps/cm"

    def apply(value: str):
        body = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": value},
                "metadata": {"name": "cm", "namespace": ns, "resourceVersion": "1"}}
        return c.request("PATCH", path, query={"fieldManager": "test", "force": "true"}, body=json.dumps(body),
                         content_type="application/apply-patch+yaml")
    created = apply("1")
    assert created["data"] == {"k": "1"} and created["metadata"]["resourceVersion"] != "1"
    e = _error(lambda: apply("2"))
    assert (e.status, e.reason) == (409, "Conflict") and "the object has been modified" in e.message
    assert c.get("ConfigMap", "cm", ns)["data"] == {"k": "1"}


def _racing(c, ns, before_check):
    """The wizard's connection whose ownership check (its first GET of the object) lets another team act first."""
    real_get, calls = c.get, []

    def get(kind, name, namespace=None):
        if not calls:
            calls.append(name)
            live = real_get(kind, name, namespace)
            before_check()
            return live  # what the check saw: the state before the other team's write
        return real_get(kind, name, namespace)
    c.get = get
    return calls


def _theirs(c, ns, value):
    return c.request("POST", f"/api/v1/namespaces/{ns}/configmaps", query={"fieldManager": "other-team"},
                     body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": ns},
                           "data": {"k": value}}, content_type="application/json")


def _ours(ns, value):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": ns}, "data": {"k": value}}


@pytest.mark.parametrize("race", ["created while absent", "replaced while ours"])
def test_an_object_another_team_writes_after_the_check_is_not_taken_over(api, race):
    from wizard.ownership import MANAGED_BY_KEY, NotOwned
    c, ns = api
    if race == "replaced while ours":
        c.apply(_ours(ns, "ours"), "test")

    def theirs():
        if race == "replaced while ours":
            c.request("DELETE", f"/api/v1/namespaces/{ns}/configmaps/cm")
        _theirs(c, ns, "theirs")
    _racing(c, ns, theirs)
    with pytest.raises(NotOwned):
        c.apply(_ours(ns, "ours again"), "test")
    live = c.get("ConfigMap", "cm", ns)
    assert live["data"] == {"k": "theirs"} and MANAGED_BY_KEY not in (live["metadata"].get("labels") or {})


def test_the_wizards_apply_still_creates_and_updates_its_own_object(api):
    from wizard.ownership import MANAGED_BY_KEY
    c, ns = api
    assert c.apply(_ours(ns, "1"), "test")["data"] == {"k": "1"}
    live = c.apply(_ours(ns, "2"), "test")
    assert live["data"] == {"k": "2"} and live["metadata"]["labels"][MANAGED_BY_KEY] == "ghcr2gitea"
    c.request("DELETE", f"/api/v1/namespaces/{ns}/configmaps/cm")
    assert c.apply(_ours(ns, "3"), "test")["data"] == {"k": "3"}  # gone meanwhile: created again
