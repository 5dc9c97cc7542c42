"""Differential conformance: the same API behaviours the wizard relies on, against the sandbox's own API server
and a real kube-apiserver (built from k8s.io/kubernetes by scripts/build-real). The real one is the oracle;
every behaviour here must agree, and known divergences are listed in docs/sandbox.md.
"""

from __future__ import annotations

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
    ns = f"diff-{request.node.name.split('[')[0][5:30].replace('_', '-')}".rstrip("-")
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
