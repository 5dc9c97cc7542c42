"""The sandbox's Kubernetes API, as the real ``kubernetes`` client (v37) sees it.

Each test asserts what a client user would notice on a real apiserver: server-set metadata,
Status errors, selectors, defaulting, the four patch types and server-side apply, watches
(resume, bookmarks, timeouts, 410 after compaction), discovery, logs and authentication.
The sandbox is only read through its documented ``/_sandbox/*`` endpoints.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import threading
import time
from datetime import UTC, datetime

import httpx
import pydantic
import pytest
from helpers import poll
from kubernetes import client, dynamic, watch
from kubernetes.client.rest import ApiException

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


# ---------------------------------------------------------------------------------------------- helpers


def raw(api: client.ApiClient, method: str, path: str, *, query=(), body=None, content_type: str | None = None,
        accept: str = "application/json", auth: bool = True, timeout: float = 10) -> tuple[int, bytes]:
    """One request through the client's own transport (TLS, token), without its typed layer."""
    headers = {"Accept": accept}
    if content_type:
        headers["Content-Type"] = content_type
    m, url, h, b, _ = api.param_serialize(method, path, query_params=list(query), header_params=headers, body=body,
                                          auth_settings=["BearerToken"] if auth else [])
    resp = api.call_api(m, url, h, b, _request_timeout=timeout)
    return resp.status, resp.read()


def first_watch_event(api: client.ApiClient, path: str, query) -> tuple[int, dict]:
    """Open a raw watch stream, read its first event and hang up."""
    m, url, h, b, _ = api.param_serialize("GET", path, query_params=list(query),
                                          header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
    resp = api.call_api(m, url, h, b, _request_timeout=10)
    try:
        line = next(watch.watch.iter_resp_lines(resp.response))
    finally:
        resp.response.release_conn()
        resp.response.close()
    return resp.status, json.loads(line)


def update(read, replace, change, name: str, ns: str):
    """Read, change, replace; again on 409, as real clients do while controllers write status."""
    for _ in range(50):
        obj = read(name, ns)
        change(obj)
        try:
            return replace(name, ns, obj)
        except ApiException as e:
            if e.status != 409:
                raise
            time.sleep(0.02)
    raise AssertionError(f"{name}: conflicts did not stop")


def status_of(e: ApiException) -> dict:
    body = json.loads(e.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == e.status
    return body


def sandbox_get(sandbox, path: str) -> dict:
    return httpx.get(f"{sandbox.api_url}{path}", verify=False, timeout=5).json()


def sandbox_post(sandbox, path: str) -> dict:
    return httpx.post(f"{sandbox.api_url}{path}", verify=False, timeout=5).json()


def make_ns(core: client.CoreV1Api, name: str) -> str:
    core.create_namespace({"metadata": {"name": name}})
    return name


def cm(name: str, data: dict | None = None, labels: dict | None = None) -> dict:
    md: dict = {"name": name}
    if labels is not None:
        md["labels"] = labels
    return {"metadata": md, "data": data or {}}


def deployment(name: str, containers: list[dict], replicas: int = 1) -> dict:
    return {"metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}}}


@pytest.fixture
def core(k8s) -> client.CoreV1Api:
    return client.CoreV1Api(k8s)


@pytest.fixture
def apps(k8s) -> client.AppsV1Api:
    return client.AppsV1Api(k8s)


# ---------------------------------------------------------------------------------------------- CRUD
def test_create_returns_server_set_metadata(k8s, core, apps):
    ns = make_ns(core, "t-meta")
    first = core.create_namespaced_config_map(ns, cm("one", {"k": "v"}))
    second = core.create_namespaced_config_map(ns, cm("two"))
    for obj in (first, second):
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", obj.metadata.uid)
        assert isinstance(obj.metadata.resource_version, str) and obj.metadata.resource_version
        assert obj.metadata.namespace == ns  # filled in from the URL
        assert obj.metadata.creation_timestamp is not None
    assert first.metadata.uid != second.metadata.uid
    assert first.metadata.resource_version != second.metadata.resource_version
    # on the wire: RFC 3339 with Z, and the kind/apiVersion the client did not send
    status, body = raw(k8s, "GET", f"/api/v1/namespaces/{ns}/configmaps/one")
    wire = json.loads(body)
    assert status == 200 and wire["kind"] == "ConfigMap" and wire["apiVersion"] == "v1"
    assert RFC3339_Z.match(wire["metadata"]["creationTimestamp"])
    assert wire["data"] == {"k": "v"}
    # generation on kinds with a spec
    dep = apps.create_namespaced_deployment(ns, deployment("web", [{"name": "web", "image": "nginx:1.27"}]))
    assert dep.metadata.generation == 1
    assert core.read_namespaced_config_map("one", ns).metadata.uid == first.metadata.uid


def test_crud_on_each_kind(k8s, core, apps):
    ns = make_ns(core, "t-crud")
    rbac = client.RbacAuthorizationV1Api(k8s)
    cases = [
        (core.create_namespaced_secret, core.read_namespaced_secret, core.replace_namespaced_secret,
         core.delete_namespaced_secret, {"metadata": {"name": "s"}, "data": {"k": base64.b64encode(b"1").decode()}},
         lambda o: setattr(o, "data", {"k": base64.b64encode(b"2").decode()}),
         lambda o: o.data["k"] == base64.b64encode(b"2").decode()),
        (core.create_namespaced_service, core.read_namespaced_service, core.replace_namespaced_service,
         core.delete_namespaced_service, {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}},
         lambda o: setattr(o.spec.ports[0], "port", 81), lambda o: o.spec.ports[0].port == 81),
        (apps.create_namespaced_deployment, apps.read_namespaced_deployment, apps.replace_namespaced_deployment,
         apps.delete_namespaced_deployment, deployment("dep", [{"name": "c", "image": "nginx:1.27"}]),
         lambda o: setattr(o.spec, "replicas", 2), lambda o: o.spec.replicas == 2),
        (rbac.create_namespaced_role, rbac.read_namespaced_role, rbac.replace_namespaced_role,
         rbac.delete_namespaced_role,
         {"metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
         lambda o: setattr(o.rules[0], "verbs", ["get", "list"]), lambda o: o.rules[0].verbs == ["get", "list"]),
        (core.create_namespaced_config_map, core.read_namespaced_config_map, core.replace_namespaced_config_map,
         core.delete_namespaced_config_map, cm("c", {"a": "1"}),
         lambda o: setattr(o, "data", {"a": "2"}), lambda o: o.data == {"a": "2"}),
    ]
    for create, read, replace, delete, body, change, changed in cases:
        name = body["metadata"]["name"]
        made = create(ns, body)
        assert read(name, ns).metadata.uid == made.metadata.uid
        new = update(read, replace, change, name, ns)
        assert changed(new) and changed(read(name, ns)), create.__name__
        assert new.metadata.resource_version != made.metadata.resource_version
        assert new.metadata.uid == made.metadata.uid
        delete(name, ns)
        with pytest.raises(ApiException) as e:
            read(name, ns)
        assert e.value.status == 404, create.__name__


def test_deployment_replace_bumps_generation_only_for_spec_changes(core, apps):
    ns = make_ns(core, "t-gen")
    apps.create_namespaced_deployment(ns, deployment("g", [{"name": "c", "image": "nginx:1.27"}]))
    read, replace = apps.read_namespaced_deployment, apps.replace_namespaced_deployment
    out = update(read, replace, lambda d: setattr(d.metadata, "labels", {**d.metadata.labels, "extra": "yes"}),
                 "g", ns)
    assert out.metadata.generation == 1  # the client sent the defaulted spec back without its nulls
    out = update(read, replace, lambda d: setattr(d.spec, "replicas", 2), "g", ns)
    assert out.metadata.generation == 2


LABELLED = {"a": {"env": "prod", "tier": "web"}, "b": {"env": "dev", "tier": "web"}, "c": {"env": "prod"}, "d": {}}


@pytest.mark.parametrize(("selector", "names"), [
    ("env=prod", "ac"),
    ("env==prod", "ac"),
    ("env!=prod", "bd"),  # objects without the key match != too
    ("env in (prod,dev)", "abc"),
    ("env in (prod, dev)", "abc"),
    ("env notin (prod)", "bd"),
    ("tier", "ab"),
    ("!tier", "cd"),
    ("env=prod,tier=web", "a"),
    ("env in (prod),!tier", "c"),
    ("env=staging", ""),
])
def test_label_selectors(core, selector, names):
    ns = make_ns(core, "t-labels")
    for name, labels in LABELLED.items():
        core.create_namespaced_config_map(ns, cm(name, labels=labels))
    got = core.list_namespaced_config_map(ns, label_selector=selector)
    assert [o.metadata.name for o in got.items] == list(names)
    assert got.kind == "ConfigMapList" and got.api_version == "v1"
    assert got.metadata.resource_version


def test_bad_label_selector_is_400(core):
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map("default", label_selector="a in (b")
    assert e.value.status == 400 and status_of(e.value)["reason"] == "BadRequest"


def test_field_selectors(core):
    ns = make_ns(core, "t-fields")
    for name in ("x", "y", "z"):
        core.create_namespaced_config_map(ns, cm(name))
    assert [o.metadata.name for o in core.list_namespaced_config_map(ns, field_selector="metadata.name=y").items] == ["y"]
    assert [o.metadata.name for o in core.list_namespaced_config_map(ns, field_selector="metadata.name!=y").items] == [
        "x", "z"]
    # spec.nodeName: the guide's pods are scheduled onto nodes
    pods = poll(lambda: (ps := core.list_pod_for_all_namespaces().items) and all(p.spec.node_name for p in ps)
                    and ps, what="all pods scheduled")
    by_node: dict[str, set] = {}
    for p in pods:
        by_node.setdefault(p.spec.node_name, set()).add((p.metadata.namespace, p.metadata.name))
    for node, want in by_node.items():
        got = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
        assert {(p.metadata.namespace, p.metadata.name) for p in got} == want
    # involvedObject.name: the kubelet's and scheduler's events for one pod
    events = poll(lambda: core.list_namespaced_event("default", field_selector="involvedObject.name=gwa-runner-0")
                      .items, what="events for gwa-runner-0")
    assert {e.involved_object.name for e in events} == {"gwa-runner-0"}
    assert "Scheduled" in {e.reason for e in events}
    combined = core.list_namespaced_event(
        "default", field_selector="involvedObject.name=gwa-runner-0,reason=Scheduled").items
    assert [e.reason for e in combined] == ["Scheduled"]


def test_replace_with_stale_resource_version_conflicts(core):
    ns = make_ns(core, "t-stale")
    core.create_namespaced_config_map(ns, cm("c", {"a": "1"}))
    stale = core.read_namespaced_config_map("c", ns)
    fresh = core.read_namespaced_config_map("c", ns)
    fresh.data = {"a": "2"}
    core.replace_namespaced_config_map("c", ns, fresh)
    stale.data = {"a": "3"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("c", ns, stale)
    body = status_of(e.value)
    assert e.value.status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    assert core.read_namespaced_config_map("c", ns).data == {"a": "2"}


def test_create_twice_is_already_exists(core):
    ns = make_ns(core, "t-twice")
    core.create_namespaced_config_map(ns, cm("c"))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, cm("c"))
    body = status_of(e.value)
    assert e.value.status == 409 and body["reason"] == "AlreadyExists"
    assert body["details"] == {"name": "c", "kind": "configmaps"}
    assert body["message"] == 'configmaps "c" already exists'


def test_get_missing_is_not_found_status(core, apps):
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("nope", "default")
    body = status_of(e.value)
    assert e.value.status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'configmaps "nope" not found'
    assert body["details"]["name"] == "nope" and body["details"]["kind"] == "configmaps"
    with pytest.raises(ApiException) as e:
        apps.read_namespaced_deployment("nope", "default")
    body = status_of(e.value)
    assert body["message"] == 'deployments.apps "nope" not found' and body["details"]["group"] == "apps"


def test_invalid_objects_are_422(k8s, core, apps):
    ns = make_ns(core, "t-invalid")
    bad = deployment("bad", [{"name": "c", "image": 5}])
    # client 37 validates typed bodies itself ...
    with pytest.raises(pydantic.ValidationError):
        apps.create_namespaced_deployment(ns, bad)
    # ... so the dict goes over the wire as it is, and the server refuses it
    status, body = raw(k8s, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body=bad,
                       content_type="application/json")
    st = json.loads(body)
    assert status == 422 and st["kind"] == "Status" and st["reason"] == "Invalid" and st["code"] == 422
    assert st["details"]["name"] == "bad" and st["details"]["kind"] == "deployments"
    assert any("image" in c["field"] for c in st["details"]["causes"])
    with pytest.raises(ApiException) as e:
        apps.read_namespaced_deployment("bad", ns)
    assert e.value.status == 404
    # an untyped patch body that makes the object invalid
    apps.create_namespaced_deployment(ns, deployment("ok", [{"name": "c", "image": "nginx:1.27"}]))
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_deployment("ok", ns, [{"op": "replace", "path": "/spec/replicas", "value": "two"}])
    assert e.value.status == 422 and status_of(e.value)["reason"] == "Invalid"
    assert apps.read_namespaced_deployment("ok", ns).spec.replicas == 1
    # names must be RFC 1123 subdomains
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, cm("Not_Valid"))
    body = status_of(e.value)
    assert e.value.status == 422 and body["reason"] == "Invalid" and "metadata.name" in body["message"]


def test_namespaced_object_in_missing_namespace_is_404(core):
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("no-such-ns", cm("c"))
    body = status_of(e.value)
    assert e.value.status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'namespaces "no-such-ns" not found'


def test_create_refuses_what_a_real_apiserver_refuses(k8s, core):
    ns = make_ns(core, "t-refuse")
    live = core.create_namespaced_config_map(ns, cm("orig", {"a": "1"}))
    # an object copied from a live one still carries its resourceVersion: etcd3's store answers 500
    copy = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="copy", resource_version=live.metadata.resource_version),
                              data=live.data)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, copy)
    assert e.value.status == 500
    assert json.loads(e.value.body)["message"] == "resourceVersion should not be set on objects to be created"
    # the body's namespace must match the URL's
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "elsewhere", "namespace": "default"}})
    assert e.value.status == 400 and "does not match the namespace" in status_of(e.value)["message"]
    # request bodies the sandbox cannot decode get a Status, not a server error
    status, body = raw(k8s, "POST", f"/api/v1/namespaces/{ns}/configmaps", body="k8s\x00\n\x0f",
                       content_type="application/vnd.kubernetes.protobuf")
    assert status == 415 and json.loads(body)["reason"] == "UnsupportedMediaType"


def test_generate_name(core):
    ns = make_ns(core, "t-genname")
    names = {core.create_namespaced_config_map(ns, {"metadata": {"generateName": "restart-"}}).metadata.name
             for _ in range(3)}
    assert len(names) == 3
    assert all(re.fullmatch(r"restart-[bcdfghjklmnpqrstvwxz2456789]{5}", n) for n in names)


def test_delete_namespace_deletes_its_objects(core):
    ns = make_ns(core, "t-gone")
    core.create_namespaced_config_map(ns, cm("c"))
    core.delete_namespace(ns)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("c", ns)
    assert e.value.status == 404


def test_list_pages_with_limit_and_continue(core):
    ns = make_ns(core, "t-pages")
    for i in range(5):
        core.create_namespaced_config_map(ns, cm(f"c{i}"))
    names, token = [], None
    while True:
        page = core.list_namespaced_config_map(ns, limit=2, _continue=token)
        assert len(page.items) <= 2
        names += [o.metadata.name for o in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert names == [f"c{i}" for i in range(5)]


def test_scale_subresource(core, apps):
    ns = make_ns(core, "t-scale")
    apps.create_namespaced_deployment(ns, deployment("s", [{"name": "c", "image": "nginx:1.27"}]))
    scale = apps.read_namespaced_deployment_scale("s", ns)
    assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1" and scale.spec.replicas == 1
    out = update(apps.read_namespaced_deployment_scale, apps.replace_namespaced_deployment_scale,
                 lambda sc: setattr(sc.spec, "replicas", 2), "s", ns)
    assert out.kind == "Scale" and out.spec.replicas == 2
    poll(lambda: len(core.list_namespaced_pod(ns, label_selector="app=s").items) == 2, what="two pods")
    out = apps.patch_namespaced_deployment_scale("s", ns, {"spec": {"replicas": 1}})
    assert out.kind == "Scale" and out.spec.replicas == 1
    dep = apps.read_namespaced_deployment("s", ns)
    assert dep.spec.replicas == 1 and dep.metadata.generation == 3
    poll(lambda: apps.read_namespaced_deployment_scale("s", ns).status.replicas == 1, what="scaled down")
    assert apps.read_namespaced_deployment_scale("s", ns).status.selector == "app=s"


def test_status_subresource_changes_status_only(core, apps):
    ns = make_ns(core, "t-status")
    apps.create_namespaced_deployment(ns, deployment("st", [{"name": "c", "image": "nginx:1.27"}]))
    out = apps.patch_namespaced_deployment_status("st", ns, {"spec": {"replicas": 5},
                                                              "status": {"observedGeneration": 9}})
    assert out.spec.replicas == 1 and out.status.observed_generation == 9 and out.metadata.generation == 1
    # and the main resource ignores status
    def change(d):
        d.status.observed_generation = 42
        d.spec.replicas = 2

    out = update(apps.read_namespaced_deployment, apps.replace_namespaced_deployment, change, "st", ns)
    assert out.spec.replicas == 2 and out.status.observed_generation != 42


def test_lease_round_trip_with_optimistic_concurrency(k8s, core):
    coord = client.CoordinationV1Api(k8s)
    ns = make_ns(core, "t-lease")
    now = datetime.now(UTC)
    made = coord.create_namespaced_lease(ns, client.V1Lease(
        metadata=client.V1ObjectMeta(name="run-lock"),
        spec=client.V1LeaseSpec(holder_identity="wizard-a", lease_duration_seconds=30, acquire_time=now,
                                renew_time=now)))
    assert made.spec.holder_identity == "wizard-a"
    assert abs((made.spec.renew_time - now).total_seconds()) < 1e-3  # MicroTime keeps microseconds
    mine, theirs = coord.read_namespaced_lease("run-lock", ns), coord.read_namespaced_lease("run-lock", ns)
    mine.spec.renew_time = datetime.now(UTC)
    coord.replace_namespaced_lease("run-lock", ns, mine)
    theirs.spec.holder_identity = "wizard-b"
    with pytest.raises(ApiException) as e:  # the second writer loses
        coord.replace_namespaced_lease("run-lock", ns, theirs)
    assert e.value.status == 409
    assert coord.read_namespaced_lease("run-lock", ns).spec.holder_identity == "wizard-a"


# ---------------------------------------------------------------------------------------------- defaulting
def test_secret_string_data_becomes_data(core):
    ns = make_ns(core, "t-secret")
    s = core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"user": "registry-user"},
                                           "data": {"other": base64.b64encode(b"x").decode()}})
    assert s.string_data is None
    assert s.type == "Opaque"
    assert base64.b64decode(s.data["user"]) == b"registry-user"
    assert base64.b64decode(s.data["other"]) == b"x"
    assert core.read_namespaced_secret("s", ns).data == s.data


def test_service_gets_cluster_ip_and_target_port(core):
    ns = make_ns(core, "t-svc")
    ips = set()
    for name in ("a", "b"):
        svc = core.create_namespaced_service(ns, {"metadata": {"name": name}, "spec": {
            "selector": {"app": name}, "ports": [{"name": "http", "port": 8080}]}})
        assert svc.spec.type == "ClusterIP"
        assert ipaddress.ip_address(svc.spec.cluster_ip) in ipaddress.ip_network("10.43.0.0/16")
        assert svc.spec.cluster_ips == [svc.spec.cluster_ip]
        port = svc.spec.ports[0]
        assert port.target_port == 8080 and port.protocol == "TCP"
        ips.add(svc.spec.cluster_ip)
    taken = {s.spec.cluster_ip for s in core.list_service_for_all_namespaces().items}
    assert len(ips) == 2 and "10.43.0.1" not in ips and "10.43.0.10" not in ips
    assert len(taken) == len(core.list_service_for_all_namespaces().items)  # no address given twice
    # an update keeps the address
    svc = core.read_namespaced_service("a", ns)
    svc.spec.ports[0].port = 9090
    svc.spec.ports[0].target_port = 9090
    assert core.replace_namespaced_service("a", ns, svc).spec.cluster_ip == svc.spec.cluster_ip


def test_pod_is_pending_then_runs(core):
    ns = make_ns(core, "t-pod")
    pod = core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "web", "image": "nginx:1.27"}]}})
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    assert pod.spec.restart_policy == "Always" and pod.spec.containers[0].image_pull_policy == "IfNotPresent"
    running = poll(lambda: (p := core.read_namespaced_pod("p", ns)).status.phase == "Running" and p,
                       what="pod Running")
    assert running.spec.node_name in {n.metadata.name for n in core.list_node().items}
    assert running.status.pod_ip and running.status.container_statuses[0].ready
    assert any(c.type == "Ready" and c.status == "True" for c in running.status.conditions)


def test_pod_logs_are_text(core):
    ns = make_ns(core, "t-logs")
    core.create_namespaced_pod(ns, {"metadata": {"name": "hello"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "alpine", "image": "alpine", "command": ["sh", "-c", "echo hi; echo there"]}]}})
    done = poll(lambda: (p := core.read_namespaced_pod("hello", ns)).status.phase in ("Succeeded", "Failed") and p,
                    what="pod finished")
    assert done.status.phase == "Succeeded"
    assert done.status.container_statuses[0].state.terminated.exit_code == 0
    logs = core.read_namespaced_pod_log("hello", ns)
    assert logs == "hi\nthere\n"
    assert core.read_namespaced_pod_log("hello", ns, tail_lines=1) == "there\n"
    assert core.read_namespaced_pod_log("hello", ns, container="alpine") == "hi\nthere\n"
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log("hello", ns, container="nope")
    assert e.value.status == 400


def test_deployment_status_and_restart_rollout(core, apps):
    ns = make_ns(core, "t-rollout")
    apps.create_namespaced_deployment(ns, deployment("web", [{"name": "web", "image": "nginx:1.27"}]))

    def settled(gen: int):
        d = apps.read_namespaced_deployment("web", ns)
        pods = core.list_namespaced_pod(ns, label_selector="app=web").items
        st = d.status
        ok = (st and st.observed_generation == gen and st.ready_replicas == 1 and st.updated_replicas == 1
              and st.replicas == 1 and len(pods) == 1 and pods[0].status.phase == "Running")
        return ok and (d, pods[0])

    d, pod = poll(lambda: settled(1), what="deployment available")
    assert d.metadata.generation == 1
    assert any(c.type == "Available" and c.status == "True" for c in d.status.conditions)
    stamp = "2026-01-01T00:00:00Z"
    patched = apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": stamp}}}}})
    assert patched.metadata.generation == 2
    assert patched.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"] == stamp
    d2, pod2 = poll(lambda: settled(2), what="rollout done")
    assert pod2.metadata.name != pod.metadata.name
    assert pod2.metadata.annotations["kubectl.kubernetes.io/restartedAt"] == stamp
    assert pod2.metadata.owner_references[0].kind == "Deployment"
    with pytest.raises(ApiException):
        core.read_namespaced_pod(pod.metadata.name, ns)


# ---------------------------------------------------------------------------------------------- patches
def test_strategic_merge_patches_containers_by_name(core, apps):
    ns = make_ns(core, "t-smp")
    apps.create_namespaced_deployment(ns, deployment("two", [
        {"name": "a", "image": "nginx:1.26", "ports": [{"containerPort": 80}], "env": [{"name": "X", "value": "1"}]},
        {"name": "b", "image": "busybox:1.36", "command": ["sleep", "3600"]}]))
    out = apps.patch_namespaced_deployment("two", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "nginx:1.27", "env": [{"name": "Y", "value": "2"}]}]}}}})
    cs = {c.name: c for c in out.spec.template.spec.containers}
    assert [c.name for c in out.spec.template.spec.containers] == ["a", "b"]
    assert cs["a"].image == "nginx:1.27"
    assert cs["a"].ports[0].container_port == 80  # kept
    assert {e.name: e.value for e in cs["a"].env} == {"X": "1", "Y": "2"}  # env merges by name too
    assert cs["b"].image == "busybox:1.36" and cs["b"].command == ["sleep", "3600"]
    assert out.metadata.generation == 2
    # $patch: delete removes one list item
    out = apps.patch_namespaced_deployment("two", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "b", "$patch": "delete"}]}}}})
    assert [c.name for c in out.spec.template.spec.containers] == ["a"]


def test_json_patch(core, apps):
    ns = make_ns(core, "t-jsonpatch")
    apps.create_namespaced_deployment(ns, deployment("j", [{"name": "c", "image": "nginx:1.26"}]))
    out = apps.patch_namespaced_deployment("j", ns, [
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.27"},
        {"op": "add", "path": "/metadata/labels/patched", "value": "yes"}])
    assert out.spec.replicas == 3 and out.spec.template.spec.containers[0].image == "nginx:1.27"
    assert out.metadata.labels["patched"] == "yes"
    core.create_namespaced_config_map(ns, cm("c", {"a/b": "1", "keep": "2"}))
    out = core.patch_namespaced_config_map("c", ns, [{"op": "remove", "path": "/data/a~1b"}])
    assert out.data == {"keep": "2"}
    with pytest.raises(ApiException) as e:  # a failed test op changes nothing
        core.patch_namespaced_config_map("c", ns, [{"op": "test", "path": "/data/keep", "value": "9"},
                                                   {"op": "remove", "path": "/data/keep"}])
    assert e.value.status == 422
    assert core.read_namespaced_config_map("c", ns).data == {"keep": "2"}


def test_merge_patch(core, apps):
    ns = make_ns(core, "t-merge")
    core.create_namespaced_config_map(ns, cm("c", {"a": "1", "b": "2"}))
    out = core.patch_namespaced_config_map("c", ns, {"data": {"a": None, "c": "3"}, "metadata": {"labels": {"l": "v"}}},
                                           _content_type=MERGE)
    assert out.data == {"b": "2", "c": "3"} and out.metadata.labels == {"l": "v"}
    # a merge patch replaces lists whole (unlike strategic merge)
    apps.create_namespaced_deployment(ns, deployment("m", [{"name": "a", "image": "nginx:1.26"},
                                                           {"name": "b", "image": "busybox:1.36"}]))
    out = apps.patch_namespaced_deployment("m", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "nginx:1.27"}]}}}}, _content_type=MERGE)
    assert [(c.name, c.image) for c in out.spec.template.spec.containers] == [("a", "nginx:1.27")]


def test_server_side_apply(k8s, core):
    ns = make_ns(core, "t-ssa")

    def apply(data: dict, manager: str, **kw):
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"by": "ssa"}},
                "data": data}
        return core.patch_namespaced_config_map("cfg", ns, body, field_manager=manager, _content_type=APPLY, **kw)

    def owners(obj) -> dict[str, dict]:
        return {m.manager: m for m in obj.metadata.managed_fields}

    # creates what is missing (201)
    made, code, _ = core.patch_namespaced_config_map_with_http_info(
        "cfg", ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"by": "ssa"}},
                    "data": {"a": "1", "b": "2"}}, field_manager="ghcr2gitea", _content_type=APPLY)
    assert code == 201 and made.data == {"a": "1", "b": "2"} and made.metadata.uid
    entry = owners(made)["ghcr2gitea"]
    assert entry.operation == "Apply" and entry.api_version == "v1" and entry.fields_type == "FieldsV1"
    assert entry.fields_v1 == {"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:by": {}}}}
    # updates; a field left out of the applied configuration is removed
    upd = apply({"a": "10"}, "ghcr2gitea")
    assert upd.data == {"a": "10"} and upd.metadata.uid == made.metadata.uid
    assert upd.metadata.resource_version != made.metadata.resource_version
    # the same configuration again is a no-op
    assert apply({"a": "10"}, "ghcr2gitea").metadata.resource_version == upd.metadata.resource_version
    # another manager: a different value conflicts
    with pytest.raises(ApiException) as e:
        apply({"a": "20"}, "other")
    body = status_of(e.value)
    assert e.value.status == 409 and body["reason"] == "Conflict"
    assert 'conflict with "ghcr2gitea"' in body["message"]
    assert body["details"]["causes"][0]["field"] == ".data.a"
    assert core.read_namespaced_config_map("cfg", ns).data == {"a": "10"}
    # ... the same value is shared ownership
    shared = apply({"a": "10"}, "co-owner")
    assert set(owners(shared)) == {"ghcr2gitea", "co-owner"}
    # force takes the field over
    forced = apply({"a": "20"}, "other", force=True)
    assert forced.data == {"a": "20"}
    assert "f:a" in owners(forced)["other"].fields_v1["f:data"]
    assert "f:data" not in owners(forced)["ghcr2gitea"].fields_v1
    # the applied config must name the URL's object
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_config_map("cfg", ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                                     "metadata": {"name": "other"}}, field_manager="x",
                                         _content_type=APPLY)
    assert e.value.status == 400


def test_server_side_apply_through_dynamic_client(k8s, core, apps):
    ns = make_ns(core, "t-ssa-dyn")
    deployments = dynamic.DynamicClient(k8s).resources.get(api_version="apps/v1", kind="Deployment")
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": ns},
            **{k: v for k, v in deployment("d", [{"name": "c", "image": "nginx:1.26"}]).items() if k != "metadata"}}
    made = deployments.server_side_apply(body=body, name="d", namespace=ns, field_manager="ghcr2gitea")
    assert made.metadata.generation == 1 and made.spec.template.spec.containers[0].image == "nginx:1.26"
    # the live container has defaulted fields the config does not: applying the same config is no conflict,
    # it makes both managers owners of the same values
    same = deployments.server_side_apply(body=body, name="d", namespace=ns, field_manager="someone-else")
    assert same.metadata.generation == 1
    assert {m.manager for m in same.metadata.managedFields} >= {"ghcr2gitea", "someone-else"}
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.27"
    for manager in ("someone-else", "ghcr2gitea"):  # a co-owned value changes for neither without force
        with pytest.raises(ApiException) as e:
            deployments.server_side_apply(body=body, name="d", namespace=ns, field_manager=manager)
        assert e.value.status == 409 and ".image" in json.loads(e.value.body)["message"]
    out = deployments.server_side_apply(body=body, name="d", namespace=ns, field_manager="ghcr2gitea",
                                        force_conflicts=True)
    assert out.spec.template.spec.containers[0].image == "nginx:1.27" and out.metadata.generation == 2
    # raw call_api: the apply body may be YAML text
    yaml_body = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n  namespace: {ns}\ndata:\n  k: v\n"
    status, raw_body = raw(k8s, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/y", body=yaml_body,
                           query=[("fieldManager", "ghcr2gitea")], content_type=APPLY)
    assert status == 201 and json.loads(raw_body)["data"] == {"k": "v"}
    # apply needs a field manager
    status, raw_body = raw(k8s, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/y", body=yaml_body,
                           content_type=APPLY)
    assert status == 400 and json.loads(raw_body)["reason"] == "BadRequest"


def test_dry_run_does_not_persist(core):
    ns = make_ns(core, "t-dry")
    made = core.create_namespaced_config_map(ns, cm("dry", {"a": "1"}), dry_run="All")
    assert made.metadata.name == "dry" and made.metadata.uid
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("dry", ns)
    assert e.value.status == 404
    real = core.create_namespaced_config_map(ns, cm("real", {"a": "1"}))
    for patch, ctype in (({"data": {"a": "2"}}, None), ([{"op": "replace", "path": "/data/a", "value": "2"}], None),
                         ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "real"},
                           "data": {"a": "2"}}, APPLY)):
        kw = {"_content_type": ctype, "field_manager": "dry", "force": True} if ctype else {}
        out = core.patch_namespaced_config_map("real", ns, patch, dry_run="All", **kw)
        assert out.data == {"a": "2"}
    stored = core.read_namespaced_config_map("real", ns)
    assert stored.data == {"a": "1"} and stored.metadata.resource_version == real.metadata.resource_version
    core.delete_namespaced_config_map("real", ns, dry_run="All")
    assert core.read_namespaced_config_map("real", ns).metadata.uid == real.metadata.uid
    core.patch_namespaced_config_map("ghost", ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                                   "metadata": {"name": "ghost"}}, field_manager="dry",
                                     _content_type=APPLY, dry_run="All")
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("ghost", ns)


# ---------------------------------------------------------------------------------------------- watches
def test_watch_resumes_from_resource_version(core):
    ns = make_ns(core, "t-watch")
    core.create_namespaced_config_map(ns, cm("before"))
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, cm("w", {"a": "1"}))
    core.patch_namespaced_config_map("w", ns, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("w", ns)
    w = watch.Watch()
    events = [(e["type"], e["object"]) for e in w.stream(core.list_namespaced_config_map, ns, resource_version=rv,
                                                        timeout_seconds=1)]
    assert [(t, o.metadata.name) for t, o in events] == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    assert isinstance(events[0][1], client.V1ConfigMap)
    assert events[0][1].data == {"a": "1"} and events[1][1].data == {"a": "2"}
    rvs = [int(o.metadata.resource_version) for _, o in events]
    assert rvs == sorted(set(rvs)) and rvs[0] > int(rv)  # each event at its own, later resourceVersion
    # resuming from the last event's resourceVersion replays nothing
    assert w.resource_version == events[-1][1].metadata.resource_version
    again = list(watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=w.resource_version,
                                      timeout_seconds=1))
    assert again == []


def test_watch_without_resource_version_starts_with_current_objects(core):
    ns = make_ns(core, "t-watch-init")
    for name in ("a", "b"):
        core.create_namespaced_config_map(ns, cm(name))
    events = list(watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "a"), ("ADDED", "b")]


def test_watch_sees_changes_made_while_it_runs(core):
    ns = make_ns(core, "t-watch-live")
    rv = core.list_namespaced_config_map(ns).metadata.resource_version

    def later():
        time.sleep(0.2)  # likely after the watch began; if not, the watch from rv still replays it: no luck needed
        core.create_namespaced_config_map(ns, cm("late"))

    t = threading.Thread(target=later)
    t.start()
    seen = []
    w = watch.Watch()
    for e in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=5):
        seen.append((e["type"], e["object"].metadata.name))
        w.stop()
    t.join()
    assert seen == [("ADDED", "late")]


def test_watch_bookmarks(core):
    ns = make_ns(core, "t-bookmark")
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    w = watch.Watch()
    t0 = time.monotonic()
    events = list(w.stream(core.list_namespaced_config_map, ns, resource_version=rv, allow_watch_bookmarks=True,
                           timeout_seconds=1))
    assert time.monotonic() - t0 < 3
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert len(bookmarks) >= 1 and len(bookmarks) == len(events)  # interval 0.5 s, nothing else happened
    for b in bookmarks:
        obj = b["raw_object"]
        assert obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1"
        assert int(obj["metadata"]["resourceVersion"]) >= int(rv)
    assert w.resource_version == bookmarks[-1]["raw_object"]["metadata"]["resourceVersion"]
    # without allowWatchBookmarks there are none
    assert list(watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv,
                                     timeout_seconds=1)) == []


def test_watch_timeout_ends_the_stream(core):
    ns = make_ns(core, "t-timeout")
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    t0 = time.monotonic()
    assert list(watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv,
                                     timeout_seconds=1)) == []
    assert 0.8 < time.monotonic() - t0 < 3


def test_watch_after_compaction_is_410_then_relist_works(sandbox, core):
    ns = make_ns(core, "t-compact")
    old_rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, cm("a"))
    assert "compacted" in sandbox_post(sandbox, "/_sandbox/compact")
    with pytest.raises(ApiException) as e:
        for _ in watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=old_rv, timeout_seconds=2):
            pass
    assert e.value.status == 410 and "Expired" in e.value.reason
    # the raw stream: 200 and one in-stream ERROR event with a 410 Status
    status, body = raw(core.api_client, "GET", f"/api/v1/namespaces/{ns}/configmaps",
                       query=[("watch", "true"), ("resourceVersion", old_rv), ("timeoutSeconds", "1")])
    assert status == 200
    ev = json.loads(body.splitlines()[0])
    assert ev["type"] == "ERROR"
    assert ev["object"]["kind"] == "Status" and ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"
    # relist, then watch from the list's resourceVersion
    listed = core.list_namespaced_config_map(ns)
    assert [o.metadata.name for o in listed.items] == ["a"]

    def later():
        time.sleep(0.2)  # likely after the watch began; if not, the watch from rv still replays it: no luck needed
        core.create_namespaced_config_map(ns, cm("b"))

    t = threading.Thread(target=later)
    t.start()
    seen = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=listed.metadata.resource_version,
                       timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        w.stop()
    t.join()
    assert seen == [("ADDED", "b")]


def test_label_selected_watch_sees_objects_leave(core):
    ns = make_ns(core, "t-leave")
    core.create_namespaced_config_map(ns, cm("in", labels={"pick": "yes"}))
    core.create_namespaced_config_map(ns, cm("out", labels={"pick": "no"}))
    rv = core.list_namespaced_config_map(ns, label_selector="pick=yes").metadata.resource_version
    core.patch_namespaced_config_map("out", ns, {"metadata": {"labels": {"pick": "yes"}}})  # joins
    core.patch_namespaced_config_map("in", ns, {"data": {"x": "1"}})  # changes inside
    core.patch_namespaced_config_map("in", ns, {"metadata": {"labels": {"pick": "no"}}})  # leaves
    core.patch_namespaced_config_map("in", ns, {"data": {"x": "2"}})  # changes outside: not seen
    events = [(e["type"], e["object"].metadata.name, e["object"].metadata.labels["pick"])
              for e in watch.Watch().stream(core.list_namespaced_config_map, ns, label_selector="pick=yes",
                                            resource_version=rv, timeout_seconds=1)]
    assert events == [("ADDED", "out", "yes"), ("MODIFIED", "in", "yes"), ("DELETED", "in", "no")]


def test_watch_of_one_object_by_field_selector(core):
    ns = make_ns(core, "t-watch-one")
    for name in ("a", "b"):
        core.create_namespaced_config_map(ns, cm(name))
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.patch_namespaced_config_map("a", ns, {"data": {"k": "1"}})
    core.patch_namespaced_config_map("b", ns, {"data": {"k": "1"}})
    events = list(watch.Watch().stream(core.list_namespaced_config_map, ns, field_selector="metadata.name=b",
                                       resource_version=rv, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("MODIFIED", "b")]


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "1", "t", "T"])
def test_watch_query_booleans_parse_like_go(k8s, value):
    status, event = first_watch_event(k8s, "/api/v1/namespaces/default/services", [("watch", value)])
    assert status == 200
    assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "kubernetes"


@pytest.mark.parametrize("value", ["false", "False", "0", "f"])
def test_false_watch_query_is_a_list(k8s, value):
    status, body = raw(k8s, "GET", "/api/v1/namespaces/default/services", query=[("watch", value)])
    assert status == 200 and json.loads(body)["kind"] == "ServiceList"


# ---------------------------------------------------------------------------------------------- typed lists
def test_every_served_kind_deserializes_strictly(k8s):
    core, apps = client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    net, rbac = client.NetworkingV1Api(k8s), client.RbacAuthorizationV1Api(k8s)
    coord = client.CoordinationV1Api(k8s)
    # let the kubelets and controllers write their status first
    poll(lambda: all(p.status.phase == "Running" for p in core.list_pod_for_all_namespaces().items),
             what="all pods Running")
    lists = {
        "namespaces": (core.list_namespace, client.V1Namespace),
        "nodes": (core.list_node, client.V1Node),
        "pods": (core.list_pod_for_all_namespaces, client.V1Pod),
        "services": (core.list_service_for_all_namespaces, client.V1Service),
        "secrets": (core.list_secret_for_all_namespaces, client.V1Secret),
        "configmaps": (core.list_config_map_for_all_namespaces, client.V1ConfigMap),
        "events": (core.list_event_for_all_namespaces, client.CoreV1Event),
        "serviceaccounts": (core.list_service_account_for_all_namespaces, client.V1ServiceAccount),
        "leases": (coord.list_lease_for_all_namespaces, client.V1Lease),
        "deployments": (apps.list_deployment_for_all_namespaces, client.V1Deployment),
        "statefulsets": (apps.list_stateful_set_for_all_namespaces, client.V1StatefulSet),
        "daemonsets": (apps.list_daemon_set_for_all_namespaces, client.V1DaemonSet),
        "ingresses": (net.list_ingress_for_all_namespaces, client.V1Ingress),
        "roles": (rbac.list_role_for_all_namespaces, client.V1Role),
        "rolebindings": (rbac.list_role_binding_for_all_namespaces, client.V1RoleBinding),
    }
    core.create_namespaced_config_map("default", cm("c", {"k": "v"}))  # there is one of each
    apps.create_namespaced_daemon_set("default", {"metadata": {"name": "ds"}, "spec": {
        "selector": {"matchLabels": {"app": "ds"}},
        "template": {"metadata": {"labels": {"app": "ds"}}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}})
    for plural, (fn, model) in lists.items():
        got = fn()
        assert got.items, plural
        assert all(isinstance(o, model) for o in got.items), plural
        assert all(o.metadata.resource_version and o.metadata.uid for o in got.items), plural
    nodes = core.list_node().items
    assert {n.metadata.name for n in nodes} == {"dellmini1", "dellmini2", "dellmini3", "dellmini5", "lenovomini"}
    lease = coord.read_namespaced_lease("dellmini1", "kube-node-lease")
    assert lease.spec.holder_identity == "dellmini1" and lease.spec.renew_time is not None


def test_every_served_kind_watches_typed(k8s):
    core = client.CoreV1Api(k8s)
    net = client.NetworkingV1Api(k8s)
    for fn, model in ((core.list_node, client.V1Node), (core.list_pod_for_all_namespaces, client.V1Pod),
                      (net.list_ingress_for_all_namespaces, client.V1Ingress)):
        want = len(fn().items)
        w, events = watch.Watch(), []
        for e in w.stream(fn, timeout_seconds=5):
            events.append(e)
            if len(events) == want:
                w.stop()
        assert len(events) == want and all(isinstance(e["object"], model) for e in events)


# ---------------------------------------------------------------------------------------------- discovery
def test_discovery(k8s):
    version = client.VersionApi(k8s).get_code()
    assert version.major == "1" and version.git_version.startswith("v1.") and "k3s" in version.git_version
    assert client.CoreApi(k8s).get_api_versions().versions == ["v1"]
    groups = {g.name: g for g in client.ApisApi(k8s).get_api_versions().groups}
    assert {"apps", "coordination.k8s.io", "networking.k8s.io", "rbac.authorization.k8s.io"} <= set(groups)
    assert groups["apps"].preferred_version.group_version == "apps/v1"
    assert client.AppsApi(k8s).get_api_group().preferred_version.version == "v1"
    core = {r.name: r for r in client.CoreV1Api(k8s).get_api_resources().resources}
    for name in ("namespaces", "nodes", "pods", "services", "secrets", "configmaps", "events", "serviceaccounts"):
        assert "watch" in core[name].verbs and "list" in core[name].verbs, name
    assert core["namespaces"].namespaced is False and core["pods"].namespaced is True
    assert core["pods"].kind == "Pod" and "po" in core["pods"].short_names
    assert core["pods/log"].verbs == ["get"]
    assert "svc" in core["services"].short_names and "cm" in core["configmaps"].short_names
    apps = client.AppsV1Api(k8s).get_api_resources()
    assert apps.group_version == "apps/v1"
    by_name = {r.name: r for r in apps.resources}
    assert by_name["deployments"].short_names == ["deploy"] and by_name["statefulsets"].short_names == ["sts"]
    assert by_name["deployments/scale"].kind == "Scale"
    for api, plural in ((client.NetworkingV1Api, "ingresses"), (client.RbacAuthorizationV1Api, "roles"),
                        (client.CoordinationV1Api, "leases")):
        assert plural in {r.name for r in api(k8s).get_api_resources().resources}
    status, body = raw(k8s, "GET", "/apis/nope.example.com/v1")
    assert status == 404 and json.loads(body)["reason"] == "NotFound"


# ---------------------------------------------------------------------------------------------- auth
def test_unauthenticated_requests_get_401(sandbox, k8s):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.get(f"{sandbox.api_url}/api/v1/namespaces", headers=headers, verify=False, timeout=5)
        assert r.status_code == 401, headers
        body = r.json()
        assert body["kind"] == "Status" and body["reason"] == "Unauthorized" and body["code"] == 401
    status, _ = raw(k8s, "GET", "/api/v1/namespaces", auth=False)
    assert status == 401
    status, _ = raw(k8s, "GET", "/api/v1/namespaces")
    assert status == 200


# ---------------------------------------------------------------------------------------------- sandbox state
def test_sandbox_state_shape(sandbox, core):
    ns = make_ns(core, "t-state")
    core.create_namespaced_pod(ns, {"metadata": {"name": "p", "labels": {"app": "p"}}, "spec": {
        "containers": [{"name": "c", "image": "nginx:1.27"}]}})
    poll(lambda: core.read_namespaced_pod("p", ns).spec.node_name, what="pod scheduled")
    core.delete_namespaced_pod("p", ns)
    s = sandbox_get(sandbox, "/_sandbox/state")
    assert set(s) == {"nodes", "pods", "requests", "registries", "api"}
    assert s["api"] == {"up_windows": []}  # the API node has not restarted
    assert set(s["registries"]) == {"ghcr", "gitea"}
    assert all(":" in k and v.startswith("sha256:") for r in s["registries"].values() for k, v in r.items())
    assert set(s["nodes"]) == {"dellmini1", "dellmini2", "dellmini3", "dellmini5", "lenovomini"}
    for name, node in s["nodes"].items():  # exactly as docs/sandbox.md documents it
        assert set(node) == {"role", "unit", "ready", "unit_state", "active_enter", "files", "loaded_registries",
                             "restarts"}, name
        assert node["role"] in ("server", "agent") and node["ready"] is True and node["unit_state"] == "active"
        assert node["unit"] == ("k3s" if node["role"] == "server" else "k3s-agent")
        assert isinstance(node["active_enter"], float) and node["active_enter"] < time.time()
        assert isinstance(node["files"], dict) and all(isinstance(v, str) for v in node["files"].values())
        assert node["loaded_registries"] is None or isinstance(node["loaded_registries"], str)
        assert node["restarts"] == []
    assert s["nodes"]["dellmini1"]["files"]["/etc/hostname"] == "dellmini1\n"
    for pod in s["pods"]:
        assert set(pod) == {"namespace", "name", "node", "phase", "labels", "deleted"}
    mine = [p for p in s["pods"] if p["namespace"] == ns and p["name"] == "p"]
    assert len(mine) == 1 and mine[0]["deleted"] is True and mine[0]["labels"] == {"app": "p"}
    assert mine[0]["node"] in s["nodes"]
    assert any(not p["deleted"] and p["name"] == "gwa-runner-0" for p in s["pods"])
    for r in s["requests"]:
        assert set(r) == {"time", "method", "path", "query", "user_agent"}
        assert isinstance(r["time"], float) and isinstance(r["query"], str)
    calls = {(r["method"], r["path"]) for r in s["requests"]}
    assert ("POST", "/api/v1/namespaces") in calls
    assert ("POST", f"/api/v1/namespaces/{ns}/pods") in calls
    assert ("DELETE", f"/api/v1/namespaces/{ns}/pods/p") in calls
    ours = next(r for r in s["requests"] if r["method"] == "DELETE" and r["path"].endswith("/pods/p"))
    assert ours["user_agent"].startswith("OpenAPI-Generator/")
    core.list_namespaced_pod(ns, label_selector="app=p")
    last = sandbox_get(sandbox, "/_sandbox/state")["requests"][-1]
    assert (last["method"], last["path"], last["query"]) == ("GET", f"/api/v1/namespaces/{ns}/pods",
                                                             "labelSelector=app%3Dp")
    assert not any(r["path"].startswith("/_sandbox/") for r in s["requests"])  # its own endpoints are not logged
