"""Issue 11 §1: every script the wizard can produce (wizard/script_catalogue.py) is valid bash, stays in the
sandbox shell's strict subset when it runs on a node or in a pod, and carries a hostile value only as a
single-quoted word — so running it with real bash runs nothing the value says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest
import yaml
from helpers import require_binary

from sandbox.shell import _Parser
from wizard import plan as P
from wizard.script_catalogue import ClusterValues, every_script, node_scripts, workflow_scripts
from wizard.workflow import BUILD_ENV

SANDBOX_LIKE = {
    "version": 1,
    "cluster": {"context": "sandbox"},
    "gitea": {"internal_service": "gitea-http.gitea-system.svc.cluster.local:3000",
              "root_url": "https://gitea.k3s.example.test:8443/", "org": "jaybrto"},
    "registry": {"host": "registry.example.test:9443", "legacy_hosts": ["registry.k3s.example.test:9443"]},
    "images": [{"source": f"ghcr.io/jaybrto/{n}", "target": f"registry.example.test:9443/jaybrto/{n}",
                "context": "services/x", "paths": ["services/x/*", "lib/[a-z]*.py"]}
               for n in ("github-workflow-agents", "gwa-webhook")],
}
# The odd values the grammar lets through into scripts: IPv6 literals, ROOT_URL path characters, OCI names.
ODD_PLAN = {**SANDBOX_LIKE,
            "gitea": {**SANDBOX_LIKE["gitea"], "root_url": "https://[fd00::7]:8443/a:b@c,d=e+f~g%2F/", "org": "a_b"},
            "registry": {"host": "[fd00::5]:5000", "legacy_hosts": ["10.0.0.5:5000"]},
            "images": [{"source": "ghcr.io/a_b/c.d__e--f", "target": "[fd00::5]:5000/a_b/c.d__e--f",
                        "paths": ["x/?y*", "[ab]/*"]}]}
MARK = "/tmp/ghcr2gitea-pwned"
# values from the cluster (the proxy's ClusterIP, workload names): no grammar applies before they reach a script
HOSTILE = [f"$(touch {MARK})", f"`touch {MARK}`", f"x; touch {MARK}", f"x' ; touch {MARK}; '", f'x" ; touch {MARK}; "',
           f"x\ntouch {MARK}", f"x && touch {MARK} #", f"x | touch {MARK}", f"${{IFS}}touch${{IFS}}{MARK}",
           f"x\\'; touch {MARK}"]
EXPR = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


@pytest.fixture(autouse=True)
def no_mark():
    if os.path.exists(MARK):
        os.remove(MARK)
    yield


def plans() -> dict[str, P.Plan]:
    return {"sandbox-like": P.from_dict(SANDBOX_LIKE), "odd": P.from_dict(yaml.safe_load(yaml.safe_dump(ODD_PLAN)))}


def github(text: str) -> str:
    return EXPR.sub("4242", text)


def single_quoted(text: str) -> list[bool]:
    """For each character: is it inside a '…' word (POSIX sh quoting, "…" and $(…) nesting followed)?"""
    mask, stack, i = [False] * len(text), ["top"], 0
    while i < len(text):
        c, top = text[i], stack[-1]
        if c == "\\":
            i += 2
            continue
        if top != "dq" and c == "'":
            j = text.index("'", i + 1)
            mask[i:j + 1] = [True] * (j + 1 - i)
            i = j + 1
            continue
        if c == "$" and text[i + 1:i + 2] == "(":
            stack.append("cmd")
            i += 2
            continue
        if c == '"':
            if top == "dq":
                stack.pop()
            else:
                stack.append("dq")
        elif c == ")" and top == "cmd":
            stack.pop()
        i += 1
    return mask


def assert_only_single_quoted(script: str, value: str, where: str) -> None:
    """Every occurrence of ``value``'s characters that a shell acts on lies inside single quotes."""
    pieces = value.split("'")  # shlex.quote writes a ' as '"'"': the pieces between are quoted
    mask = single_quoted(script)
    for piece in pieces:
        if not piece or re.fullmatch(r"[\w@%+=:,./-]*", piece):
            continue
        start = script.find(piece)
        assert start >= 0, f"{where}: {piece!r} not found as written (pasted raw or split?)"
        while start >= 0:
            assert all(mask[start:start + len(piece)]), f"{where}: {piece!r} is not single-quoted:\n{script}"
            start = script.find(piece, start + 1)


@pytest.mark.parametrize("name", ["sandbox-like", "odd"])
def test_every_script_is_valid_bash(name):
    bash = require_binary("bash")
    scripts = every_script(plans()[name])
    assert len(scripts) >= 9 + 5  # the node/pod scripts and at least one workflow job
    for what, text in scripts.items():
        res = subprocess.run([bash, "-n"], input=github(text), capture_output=True, text=True, timeout=10)
        assert res.returncode == 0, f"{what}: {res.stderr}\n{text}"


@pytest.mark.parametrize("name", ["sandbox-like", "odd"])
def test_node_and_pod_scripts_stay_in_the_sandbox_shell_subset_and_start_with_umask_077(name):
    for what, text in node_scripts(plans()[name]).items():
        _Parser(text).program()  # raises on anything outside the strict subset
        assert "umask 077" in text.splitlines()[:2], what


def test_plan_values_with_odd_characters_are_single_quoted_words():
    plan = plans()["odd"]
    scripts = node_scripts(plan)
    assert_only_single_quoted(scripts["pod: Kaniko view"], plan.realm, "Kaniko view")
    words = shlex.split(scripts["node: containerd pull"].splitlines()[-1])
    assert words == ["k3s", "crictl", "pull", plan.images[0].target + ":latest"]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_cluster_values_are_single_quoted_and_inert_under_real_bash(value, tmp_path):
    """The proxy's ClusterIP and the workloads' names are read from the cluster: quoted, they stay data."""
    bash = require_binary("bash")
    plan = plans()["sandbox-like"]
    cluster = ClusterValues(proxy_ip=value, rollouts=(("Deployment", value),))
    probe = node_scripts(plan, cluster)["pod: auth proxy probe"]
    deploy = workflow_scripts(plan, cluster)["workflow: deploy / Restart updated workloads"]
    for what, text in (("proxy probe", probe), ("deploy job", deploy)):
        assert_only_single_quoted(text, value, what)
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("curl", "kubectl"):
        (stubs / tool).write_text("#!/bin/sh\nexit 0\n")
        (stubs / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}
    for text in (probe, github(deploy).replace("${{", "")):
        subprocess.run([bash, "-c", text], env=env, capture_output=True, text=True, timeout=10, cwd=tmp_path)
    assert not os.path.exists(MARK), "a value from the cluster ran as code"


@pytest.mark.parametrize("ref", [f"refs/heads/$(touch {MARK})", f"refs/heads/`touch {MARK}`",
                                 "refs/heads/a: {command: [sh]}", "refs/heads/x'y"])
def test_a_branch_name_reaches_the_build_step_as_data_and_is_refused(ref, tmp_path):
    """GitHub expressions are env values of the build step, checked before they go into the pod spec."""
    from stages.test_workflow import run_build_step

    from wizard import workflow as W
    plan = plans()["sandbox-like"]
    wf = W.load(W.render(plan))
    jid, step = next((j, s) for j, job in wf["jobs"].items() for s in job["steps"] if s["name"] == "Build image")
    assert set(step["env"]) == set(BUILD_ENV) and "${{" not in step["run"]
    res, applied = run_build_step(jid, step, wf, {"github.ref": ref}, cwd=tmp_path)
    assert res.returncode == 1 and "::error::GIT_REF" in res.stdout + res.stderr
    assert applied == "" and not os.path.exists(MARK)


def test_every_script_is_valid_bash_for_the_sandbox_plan(sandbox):
    bash = require_binary("bash")
    plan = P.load(sandbox.plan)
    for what, text in every_script(plan).items():
        res = subprocess.run([bash, "-n"], input=github(text), capture_output=True, text=True, timeout=10)
        assert res.returncode == 0, f"{what}: {res.stderr}\n{text}"


# Every plan field whose value reaches a script, with where to put a hostile value into it.
SCRIPT_FIELDS = {
    "registry.host": lambda d, v: d["registry"].update(host=v),
    "registry.legacy_hosts[0]": lambda d, v: d["registry"].update(legacy_hosts=[v]),
    "gitea.root_url": lambda d, v: d["gitea"].update(root_url=f"https://gitea.example.test/{v}/"),
    "gitea.internal_service": lambda d, v: d["gitea"].update(internal_service=f"gitea-http{v}.ns.svc:3000"),
    "gitea.org": lambda d, v: d["gitea"].update(org=v),
    "images[0].target": lambda d, v: d["images"][0].update(target=d["images"][0]["target"] + v),
    "images[0].context": lambda d, v: d["images"][0].update(context=v),
    "images[0].paths[0]": lambda d, v: d["images"][0].update(paths=[v]),
    "cluster.helper_image": lambda d, v: d["cluster"].update(helper_image=f"alpine:3.20{v}"),
    "proxy.image": lambda d, v: d.setdefault("proxy", {}).update(image=f"nginx{v}"),
    "ci.namespace": lambda d, v: d.setdefault("ci", {}).update(namespace=v),
    "proxy.name": lambda d, v: d.setdefault("proxy", {}).update(name=f"p{v}"),
    "proxy.namespace": lambda d, v: d.setdefault("proxy", {}).update(namespace=v),
    "workloads.namespace": lambda d, v: d.setdefault("workloads", {}).update(namespace=v),
    "ci.branch": lambda d, v: d.setdefault("ci", {}).update(branch=f"main{v}"),
}


@pytest.mark.parametrize("field", list(SCRIPT_FIELDS))
def test_hostile_values_cannot_reach_a_script_through_the_plan(field):
    """What the cluster-value test proves quoted, the grammar keeps out of the plan altogether."""
    for value in HOSTILE:
        data = yaml.safe_load(yaml.safe_dump(SANDBOX_LIKE))
        SCRIPT_FIELDS[field](data, value)
        with pytest.raises(P.PlanError) as err:
            P.from_dict(data)
        assert any(p.startswith(f"plan: {field}: ") for p in err.value.problems), (value, err.value.problems)


def test_a_kube_dns_clusterip_that_is_not_an_ip_never_reaches_nginx():
    """The resolver nginx gets is read from the cluster when the plan leaves it out: only an IP gets through."""
    from wizard.stages.base import RunCache
    from wizard.stages.preflight import coredns_ip

    class Cluster:
        def get(self, kind, name, namespace=None):
            return {"spec": {"clusterIP": "10.43.0.10;\n  location / { return 200; }"}}

    class Ctx:
        plan = plans()["sandbox-like"]
        cluster = Cluster()
        cache = RunCache()
    assert coredns_ip(Ctx) is None


@pytest.mark.parametrize("backup", [
    "/etc/rancher/k3s/registries.yaml.bak-20261202T090000Z; rm -rf /",
    "/etc/rancher/k3s/registries.yaml.bak-../../../etc/shadow",
    "/etc/rancher/k3s/registries.yaml.bak-20261202T090000Z /etc/rancher/k3s/registries.yaml",
    "/etc/rancher/k3s/registries.yaml.bak-$(id)",
    "/etc/rancher/k3s/registries.yaml.bak-20261202T090000Z\n",
    "/etc/rancher/k3s/registries.yaml",
    "/etc/rancher/k3s/registries.yaml.bak-*",
])
def test_rotate_token_removes_only_a_backup_named_as_the_wizard_names_them(backup):
    from wizard.rotate import remove_backups_script
    with pytest.raises(ValueError, match="not a registries.yaml backup"):
        remove_backups_script(backup)


def test_rotate_token_backup_removal_is_one_rm_of_one_word():
    from wizard.registries import backup_path
    from wizard.rotate import remove_backups_script
    backup = backup_path()
    lines = [ln for ln in remove_backups_script(backup).text().splitlines() if ln.startswith("rm ")]
    assert [shlex.split(ln) for ln in lines] == [["rm", "-f", backup]]
