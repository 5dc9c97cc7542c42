"""Issue 11 §2: plans are read with wizard/yamlsafe.py — duplicate keys, aliases (billion laughs), deep nesting
and huge files are each one line and exit 2, fast — and `init` cannot be made to write a plan by the cluster."""

from __future__ import annotations

import time

import pytest
import yaml
from helpers import run_cli

from wizard import init, yamlsafe
from wizard import plan as P

GOOD = """\
version: 1
gitea:
  root_url: https://gitea.k3s.example.test/
  org: jaybrto
registry:
  host: registry.example.test
images:
- source: ghcr.io/jaybrto/gwa-webhook
  target: registry.example.test/jaybrto/gwa-webhook
"""


def billion_laughs(levels: int = 9) -> str:
    """10**levels strings under a real key: printing the old "expected a list of strings" error never ended."""
    lines = ["network:", "  resolve:", '  - &a0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return GOOD + "\n".join(lines) + "\n"


def refused(tmp_path, text: str | bytes) -> str:
    f = tmp_path / "plan.yaml"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    res = run_cli(None, "plan", "--plan", str(f))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ghcr2gitea: plan: "), lines
    return lines[0]


@pytest.mark.timeout(10)
def test_billion_laughs_is_refused_at_the_first_anchor_in_well_under_a_second(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(P.PlanError) as err:
        P.loads(billion_laughs())
    assert time.monotonic() - t0 < 1.0
    assert "anchor" in str(err.value) and "\n" not in str(err.value)
    assert "aliases and anchors are not allowed" in refused(tmp_path, billion_laughs())


@pytest.mark.timeout(10)
def test_the_alias_budget_stops_expansion_for_yaml_that_allows_aliases():
    t0 = time.monotonic()
    with pytest.raises(yamlsafe.YamlRefused, match="expand to more than"):
        yamlsafe.load(billion_laughs(), refuse_aliases=False)
    assert time.monotonic() - t0 < 1.0
    assert yamlsafe.load("a: &x 1\nb: *x\n", refuse_aliases=False) == {"a": 1, "b": 1}


def test_a_duplicate_key_at_any_depth_is_refused_not_silently_last_wins(tmp_path):
    # the injection: PyYAML would keep the second helper_image
    text = GOOD + "cluster:\n  helper_image: alpine:3.20\n  helper_image: evil/rootkit\n"
    assert yaml.safe_load(text)["cluster"]["helper_image"] == "evil/rootkit"
    line = refused(tmp_path, text)
    assert "duplicate key 'helper_image' at line 12" in line and "first at line 11" in line
    assert "duplicate key 'gitea'" in refused(tmp_path, GOOD + "gitea:\n  org: other\n")
    assert "duplicate key 'x'" in refused(tmp_path, GOOD + "network:\n  resolve: [{x: 1, x: 2}]\n")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path, opener):
    line = refused(tmp_path, GOOD + "x: " + opener * 10000 + "\n")
    assert "nested deeper than" in line or "not valid YAML" in line


def test_files_over_one_mib_are_refused_before_parsing(tmp_path):
    line = refused(tmp_path, GOOD + "# " + "x" * (yamlsafe.MAX_BYTES + 10) + "\n")
    assert "over 1048576 bytes" in line


def test_not_utf8_is_one_line(tmp_path):
    assert "not UTF-8" in refused(tmp_path, GOOD.encode() + b"# \xff\xfe\n")


def test_the_good_plan_still_loads():
    assert P.loads(GOOD).registry_host == "registry.example.test"


# ------------------------------------------------------------------------------------------ init
class FakeCluster:
    """What ClusterReader answers, from fixed objects (init only lists and gets)."""

    def __init__(self, objects: dict[str, list[dict]]):
        self.objects = objects

    def list(self, kind, namespace=None, **_):
        return [o for o in self.objects.get(kind, []) if namespace is None
                or o["metadata"].get("namespace") == namespace]

    def get(self, kind, name, namespace=None):
        return next((o for o in self.list(kind, namespace) if o["metadata"]["name"] == name), None)


def deployment(ns: str, name: str, image: str) -> dict:
    return {"metadata": {"namespace": ns, "name": name},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}


def cluster(*extra_deployments: dict, hosts=("gitea.k3s.example.test", "registry.example.test"),
            nodes=("dellmini1", "dellmini2")) -> FakeCluster:
    return FakeCluster({
        "Service": [{"metadata": {"namespace": "gitea-system", "name": "gitea-http"},
                     "spec": {"ports": [{"port": 3000}]}},
                    {"metadata": {"namespace": "kube-system", "name": "kube-dns"},
                     "spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53}]}}],
        "Deployment": [deployment("default", "gwa-webhook", "ghcr.io/jaybrto/gwa-webhook:latest"),
                       *extra_deployments],
        "Ingress": [{"metadata": {"namespace": "gitea-system", "name": f"i{n}"},
                     "spec": {"rules": [{"host": h, "http": {"paths": [
                         {"backend": {"service": {"name": "gitea-http"}}}]}}]}} for n, h in enumerate(hosts)],
        "Node": [{"metadata": {"name": n}} for n in nodes],
    })


def test_init_output_always_loads_when_every_value_was_discovered():
    found = init.discover(cluster())
    assert found["skipped"] == []
    plan = P.loads(init.render(found, context="k3s-home"))
    assert (plan.registry_host, plan.realm_host, plan.org, plan.context) == (
        "registry.example.test", "gitea.k3s.example.test", "jaybrto", "k3s-home")
    assert [i.source for i in plan.images] == ["ghcr.io/jaybrto/gwa-webhook"]
    assert plan.coredns_ip == "10.43.0.10"


def test_a_tenant_image_string_cannot_add_a_helper_image_to_the_plan():
    evil = deployment("tenant", "innocent", "ghcr.io/jaybrto/app:1\ncluster:\n  helper_image: evil/rootkit")
    found = init.discover(cluster(evil))
    text = init.render(found, context=None)
    plan = P.loads(text)
    assert plan.helper_image == "alpine:3.20"
    assert "evil/rootkit\n" not in text and "\nhelper_image" not in text
    assert [i.source for i in plan.images] == ["ghcr.io/jaybrto/gwa-webhook"]
    assert len(found["skipped"]) == 1
    line = found["skipped"][0]
    assert "\n" not in line and "Deployment 'tenant'/'innocent'" in line and "control" in line


@pytest.mark.parametrize("bad", [
    {"hosts": ("gitea.k3s.example.test\nregistry:\n  host: evil.example", "registry.example.test")},
    {"hosts": ("gitea.k3s.example.test", "registry.example.test:443`id`")},
    {"nodes": ("dellmini1", "x\nimages: []")},
])
def test_bad_hosts_and_node_names_from_the_cluster_are_left_out_and_reported(bad):
    found = init.discover(cluster(**bad))
    assert len(found["skipped"]) == 1 and "\n" not in found["skipped"][0]
    text = init.render(found, context=None)
    data = yaml.safe_load(text)  # the dumped plan is still the shape init meant, CHANGE-ME where a value was bad
    assert set(data) == {"version", "gitea", "registry", "images", "proxy"}
    assert len(data["images"]) == 1
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "evil" not in body and "`" not in body
    assert "CHANGE-ME" in body or "nodes" in bad


def test_init_reports_each_skipped_value_on_stderr(sandbox, k8s):
    from kubernetes import client
    apps = client.AppsV1Api(k8s)
    body = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "innocent", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "innocent"}}, "replicas": 0, "template": {
                "metadata": {"labels": {"app": "innocent"}},
                "spec": {"containers": [{"name": "c", "image": "ghcr.io/jaybrto/app:1\ncluster:\n  helper_image: "
                                         "evil/rootkit"}]}}}}
    apps.create_namespaced_deployment("default", body)
    res = run_cli(sandbox, "init", "--kubeconfig", str(sandbox.kubeconfig))
    assert res.returncode == 0, res.stderr
    skipped = [ln for ln in res.stderr.splitlines() if "skipped image" in ln]
    assert len(skipped) == 1 and "default'/'innocent'" in skipped[0]
    plan = P.loads(res.stdout)
    assert plan.helper_image == "alpine:3.20" and "app" not in {i.name for i in plan.images}
