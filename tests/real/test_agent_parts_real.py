"""Parts of the real-API world's node agent against a real kube-apiserver.

The mirror (list+watch in, kubelet writes out) and the front proxy the kubeconfig points at."""

from __future__ import annotations

import asyncio

import pytest

from sandbox.kinds import BY_KIND
from sandbox.mirror import Mirror

POD, NS, EVENT = BY_KIND[("v1", "Pod")], BY_KIND[("v1", "Namespace")], BY_KIND[("v1", "Event")]


async def _until(cond, timeout=30.0):  # generous: CI machines are loaded
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


def test_the_mirror_sees_the_servers_objects_and_its_status_writes_win_in_order(real_plane):
    from kubernetes import client

    from wizard.kube import api_client
    api = api_client(str(real_plane.kubeconfig()))
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "m1"}})
    core.create_namespaced_service_account("m1", {"metadata": {"name": "default"}})  # no controller-manager here

    async def main():
        m = await Mirror(real_plane.url, real_plane.token, str(real_plane.dir / "ca.crt"), [POD, NS, EVENT]).start()
        try:
            assert m.get(NS, "", "m1") is not None  # the list filled it
            seen = []
            m.listeners.append(lambda etype, kind, old, new: seen.append((etype, kind.kind)))
            await asyncio.to_thread(core.create_namespaced_pod, "m1", {
                "metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}})
            await _until(lambda: m.get(POD, "m1", "p") is not None)  # the watch brought it
            assert ("ADDED", "Pod") in seen
            # two status writes in a row, before either is answered: the second one is what the server keeps
            for phase in ("Pending", "Running"):
                new = {**m.get(POD, "m1", "p")}
                new["status"] = {"phase": phase, "podIP": "10.42.0.7", "podIPs": [{"ip": "10.42.0.7"}]}
                m.update(POD, new, "m1", "p", subresource="status", manager="k3s")
            assert m.get(POD, "m1", "p")["status"]["phase"] == "Running"  # the local copy at once
            await m.flush()
            pod = await asyncio.to_thread(core.read_namespaced_pod, "p", "m1")
            assert pod.status.phase == "Running" and pod.status.pod_ip == "10.42.0.7"
            await _until(lambda: m.get(POD, "m1", "p")["metadata"]["resourceVersion"]
                         == pod.metadata.resource_version)
            assert m.get(POD, "m1", "p")["status"]["phase"] == "Running"
            # an Event is fire-and-forget, and it is the server's object that appears
            m.create(EVENT, {"metadata": {"name": "p.1", "namespace": "m1"}, "reason": "Pulled", "message": "ok",
                             "involvedObject": {"kind": "Pod", "namespace": "m1", "name": "p", "apiVersion": "v1"},
                             "source": {"component": "kubelet", "host": "n1"}, "type": "Normal", "count": 1},
                     "m1", manager="kubelet")
            await _until(lambda: m.get(EVENT, "m1", "p.1") is not None)
            assert m.get(EVENT, "m1", "p.1")["metadata"]["uid"]
            # the kubelet's final delete: grace 0, and only the pod it ran
            m.delete(POD, "m1", "p", preconditions={"uid": "not-this-pod"})
            await asyncio.sleep(0)
            m.delete(POD, "m1", "p", preconditions={"uid": pod.metadata.uid})
            await _until(lambda: m.get(POD, "m1", "p") is None)
            assert ("DELETED", "Pod") in seen and m.errors == []
        finally:
            await m.close()
    try:
        asyncio.run(main())
    finally:
        api.close()


def test_a_refused_status_write_is_recorded_not_raised(real_plane):
    async def main():
        m = await Mirror(real_plane.url, real_plane.token, str(real_plane.dir / "ca.crt"), [POD]).start()
        try:
            await m.acreate(NS, {"metadata": {"name": "m2"}})
            await m.acreate(BY_KIND[("v1", "ServiceAccount")], {"metadata": {"name": "default"}}, "m2")
            await m.acreate(POD, {"metadata": {"name": "q"}, "spec": {
                "nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}, "m2")
            await _until(lambda: m.get(POD, "m2", "q") is not None)
            bad = {**m.get(POD, "m2", "q"), "status": {"phase": "Running", "podIP": "not-an-ip",
                                                        "podIPs": [{"ip": "not-an-ip"}]}}
            m.update(POD, bad, "m2", "q", subresource="status")
            await m.flush()
            assert len(m.errors) == 1 and "422" in m.errors[0] and "not-an-ip" in m.errors[0]
        finally:
            await m.close()
    asyncio.run(main())


def test_the_front_proxy_refuses_connections_while_the_api_node_restarts(real_plane):
    import ssl
    import urllib.request

    from sandbox.frontproxy import FrontProxy
    ctx = ssl.create_default_context(cafile=str(real_plane.dir / "ca.crt"))

    def version(url):
        req = urllib.request.Request(f"{url}/version", headers={"Authorization": f"Bearer {real_plane.token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
            import json
            return json.load(r)["gitVersion"]

    async def main():
        proxy = await FrontProxy(real_plane.api_port).start()
        try:
            # TLS passes through: the client verifies the real API server's certificate, and gets its release
            assert (await asyncio.to_thread(version, proxy.url)).startswith("v1.")
            await proxy.set_down(True)
            with pytest.raises(OSError) as e:  # urllib wraps the refusal in URLError, an OSError
                await asyncio.to_thread(version, proxy.url)
            assert "refused" in str(e.value).lower()
            await proxy.set_down(False)  # the same port again, as a restarted k3s listens on 6443 again
            assert (await asyncio.to_thread(version, proxy.url)).startswith("v1.")
        finally:
            await proxy.stop()
    asyncio.run(main())


def test_pod_logs_reach_the_client_through_the_real_api_server_from_the_agents_kubelet_endpoint(real_plane):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from sandbox.kubeletapi import KubeletEndpoint
    from wizard.kube import api_client
    d = real_plane.dir
    logs = {("m3", "p", "c"): "line 1\nline 2\n"}
    node = BY_KIND[("v1", "Node")]

    async def main():
        kubelet = await KubeletEndpoint(lambda ns, p, c: logs.get((ns, p, c)), lambda ns, p: False,
                                        str(d / "apiserver.crt"), str(d / "apiserver.key"), str(d / "ca.crt")).start()
        m = await Mirror(real_plane.url, real_plane.token, str(d / "ca.crt"), [POD]).start()
        api = api_client(str(real_plane.kubeconfig()))
        core = client.CoreV1Api(api)
        try:
            n = await m.acreate(node, {"metadata": {"name": "dellmini9"}})
            n["status"] = {"addresses": [{"type": "InternalIP", "address": "192.0.2.99"},
                                         {"type": "InternalDNS", "address": "127.0.0.1"}],
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}}}
            await m.aput(node, n, subresource="status")
            await m.acreate(NS, {"metadata": {"name": "m3"}})
            await m.acreate(BY_KIND[("v1", "ServiceAccount")], {"metadata": {"name": "default"}}, "m3")
            for name in ("p", "w"):
                await m.acreate(POD, {"metadata": {"name": name}, "spec": {
                    "nodeName": "dellmini9", "containers": [{"name": "c", "image": "x"}]}}, "m3")
            text = await asyncio.to_thread(core.read_namespaced_pod_log, "p", "m3", tail_lines=1)
            assert text == "line 2\n"
            assert kubelet.clients == ["kube-apiserver-kubelet-client"]  # mutual TLS: only the API server
            with pytest.raises(ApiException) as e:  # the kubelet's words reach the client as the status message
                await asyncio.to_thread(core.read_namespaced_pod_log, "w", "m3")
            assert e.value.status == 400 and "is waiting to start: ContainerCreating" in e.value.body
        finally:
            api.close()
            await m.close()
            await kubelet.stop()
    asyncio.run(main())


def test_the_mirror_watches_on_from_its_last_resource_version_and_lists_once(real_plane):
    """Each ended watch (the server's timeout) is resumed from the last resourceVersion, as client-go does:
    a world of thousands of pods is not listed again every few minutes, and no event between two watches is lost."""
    CM = BY_KIND[("v1", "ConfigMap")]

    async def main():
        m = Mirror(real_plane.url, real_plane.token, str(real_plane.dir / "ca.crt"), [CM])
        m.watch_timeout = 1
        await m.start()
        try:
            await m.acreate(NS, {"metadata": {"name": "m4"}})
            for i in range(4):  # each create lands in another watch than the one before
                await m.acreate(CM, {"metadata": {"name": f"c{i}"}, "data": {"i": str(i)}}, "m4")
                await asyncio.sleep(1.2)
            await _until(lambda: all(m.get(CM, "m4", f"c{i}") is not None for i in range(4)))
        finally:
            await m.close()
    asyncio.run(main())
    mine = [r for r in real_plane.requests() if r["user_agent"] == "ghcr2gitea-node-agent" and r["path"]
            == "/api/v1/configmaps" and r["method"] == "GET"]
    lists = [r for r in mine if "watch=" not in r["query"]]
    watches = [r for r in mine if "watch=" in r["query"]]
    assert len(lists) == 1, lists
    assert len(watches) >= 4, watches
    assert all("resourceVersion=" in r["query"] for r in watches)
