"""Issue 11 §1: a corpus of hostile plan values. Each is refused at plan load with one line that names the
field (and `ghcr2gitea plan` exits 2 without a traceback), or — where the value is legitimately allowed — it
is proven inert on the sandbox: no file created on any node and no unit restarted."""

from __future__ import annotations

import copy

import pytest
import yaml
from helpers import run_cli, sandbox_state

from wizard import plan as P

BASE = {
    "version": 1,
    "gitea": {"internal_service": "gitea-http.gitea-system.svc.cluster.local:3000",
              "root_url": "https://gitea.k3s.example.test/", "username": "registry-user", "org": "jaybrto"},
    "registry": {"host": "registry.example.test", "legacy_hosts": ["registry.k3s.example.test"]},
    "images": [{"source": "ghcr.io/jaybrto/gwa-webhook", "target": "registry.example.test/jaybrto/gwa-webhook"}],
}
EXPLOIT = "[fe80::1%$(touch /tmp/pwned; systemctl --no-block restart k3s)]"  # the issue's words
# without a '/', which the old "no scheme or path" rule happened to catch: ipaddress took it, and it ran
EXPLOIT_NO_SLASH = "[fe80::1%$(touch${IFS}pwned;systemctl --no-block restart k3s)]"

# (field as the error names it, value)
CORPUS: list[tuple[str, object]] = [
    # hosts: the zone-id exploit of the issue, shell metacharacters, quotes, control characters, look-alikes
    ("registry.host", EXPLOIT),
    ("registry.host", EXPLOIT_NO_SLASH),
    ("registry.legacy_hosts[0]", EXPLOIT_NO_SLASH),
    ("gitea.root_url", f"https://{EXPLOIT_NO_SLASH}/"),
    ("registry.host", "[fe80::1%eth0]"),
    ("registry.host", "[fe80::1%25eth0]:5000"),
    ("registry.host", "registry.example.test;reboot"),
    ("registry.host", "registry.example.test$(id)"),
    ("registry.host", "`id`.example.test"),
    ("registry.host", "registry.example.test'"),
    ("registry.host", 'registry.example.test"'),
    ("registry.host", "registry.example.test\ncluster:\n  helper_image: evil/rootkit"),
    ("registry.host", "registry.example.test\x00"),
    ("registry.host", "r\u0435gistry.example.test"),  # Cyrillic е
    ("registry.host", "registry\uff0eexample.test"),  # fullwidth full stop
    ("registry.host", "registry.example.test:\u0661\u0662\u0663"),  # Arabic-Indic digits: str.isdigit() says yes
    ("registry.host", "registry.example.test:\uff14\uff14\uff13"),  # fullwidth digits
    ("registry.host", "registry.example.test:0"),
    ("registry.host", "registry.example.test:65536"),
    ("registry.host", "registry.example.test:443 "),
    ("registry.host", "registry.example.test:44\t3"),
    ("registry.host", "registry.example.test\u202e"),  # right-to-left override
    ("registry.host", "a" * 300),
    ("registry.host", "*a"),
    ("registry.host", "&a"),
    ("registry.host", "!!python/object:os.system"),
    ("registry.host", "? x"),
    ("registry.host", "{"),
    ("registry.host", "- x"),
    ("registry.host", "fe80::1"),
    ("registry.host", "999.1.1.1"),
    ("registry.legacy_hosts[0]", "legacy.example.test|sh"),
    ("registry.legacy_hosts[0]", "legacy.example.test&&reboot"),
    ("registry.legacy_hosts[0]", "[::1%lo]"),
    # ghcr.url: the source registry, https://HOST[:PORT] and nothing else (it reaches URLs and messages)
    ("ghcr.url", "http://ghcr.io"),
    ("ghcr.url", "https://ghcr.io/$(id)"),
    ("ghcr.url", "https://ghcr.io`id`"),
    ("ghcr.url", "https://user:pw@ghcr.io"),
    ("ghcr.url", "https://ghcr.io?x=1"),
    ("ghcr.url", "https://ghcr.io:99999"),
    ("ghcr.url", "https://ghcr.io\r\nHost: evil"),
    ("ghcr.url", "https://ghcr.\u0456o"),
    ("ghcr.url", "ghcr.io"),
    # ROOT_URL: the host as above, a path without quotes, spaces, backslashes, $ or backticks
    ("gitea.root_url", "https://gitea.example.test/$(id)/"),
    ("gitea.root_url", "https://gitea.example.test/`id`/"),
    ("gitea.root_url", "https://gitea.example.test/a b/"),
    ("gitea.root_url", "https://gitea.example.test/a'b/"),
    ("gitea.root_url", "https://gitea.example.test/a\\b/"),
    ("gitea.root_url", "https://user:pw@gitea.example.test/"),
    ("gitea.root_url", "https://gitea.example.test/?x=1"),
    ("gitea.root_url", "https://[fe80::1%25eth0]/"),
    ("gitea.root_url", "https://gitea.example.test/\r\n"),
    ("gitea.root_url", "https://gitea.\u0435xample.test/"),
    ("gitea.internal_service", "gitea-http.gitea-system.svc.cluster.local:3000;id"),
    ("gitea.internal_service", "gitea-http.gitea-system.svc.cluster.local:\uff13\uff10\uff10\uff10"),
    ("gitea.internal_service", "$(id).gitea-system.svc.cluster.local:3000"),
    # org, user, image paths: the OCI name grammar, Gitea's user names
    ("gitea.org", "jaybrto;id"),
    ("gitea.org", "JayBrto"),
    ("gitea.org", "../admin"),
    ("gitea.org", "jay--brto"),
    ("gitea.username", "registry-user$(id)"),
    ("gitea.username", "registry user"),
    ("gitea.username", "registr\u0443-user"),  # Cyrillic у
    ("gitea.username", "a" * 2000),
    ("images[0].source", "ghcr.io/jaybrto/gwa-webhook;id"),
    ("images[0].source", "ghcr.io/jaybrto/../etc"),
    ("images[0].source", "ghcr.io/JAYBRTO/gwa-webhook"),
    ("images[0].target", "registry.example.test/jaybrto/gwa-webhook$(id)"),
    ("images[0].target", "registry.example.test/other/gwa-webhook"),
    ("images[0].dockerfile", "Dockerfile$(id)"),
    ("images[0].dockerfile", "../../etc/passwd"),
    ("images[0].dockerfile", "Docker file"),
    ("images[0].context", "/etc"),
    ("images[0].paths[0]", "lib/*.py'; id; '"),
    # namespaces and object names: DNS-1123 / DNS-1035 as Kubernetes has them
    ("secrets.namespace", "default;id"),
    ("secrets.namespace", "Default"),
    ("secrets.namespace", "a.b"),
    ("secrets.push", "a..b"),
    ("secrets.push", "gitea-registry-push\n"),
    ("secrets.pull", "-secret"),
    ("proxy.name", "1proxy"),
    ("ingress.name", "x" * 254),
    ("cluster.wizard_namespace", "kube-system\u200b"),  # zero-width space
    # image references
    ("cluster.helper_image", "alpine:3.20 --privileged"),
    ("cluster.helper_image", 'alpine:3.20"'),
    ("cluster.helper_image", "alpine@sha256:abc;id"),
    ("cluster.helper_image", "evil/rootkit\n"),
    ("proxy.image", "nginx:alpine$(id)"),
    # addresses
    ("proxy.coredns_ip", "10.43.0.10;id"),
    ("proxy.coredns_ip", "fe80::1%eth0"),
    ("proxy.coredns_ip", "10.43.0.\u0661"),
    ("network.resolve[0]", "registry.example.test:443:127.0.0.1;id"),
    ("network.resolve[0]", "registry.example.test:\uff14\uff14\uff13:127.0.0.1"),
    ("network.resolve[0]", "[fe80::1%eth0]:443:127.0.0.1"),
    # file paths and CI
    ("ci.workflow", "../../etc/cron.d/x"),
    ("ci.workflow", "/etc/passwd"),
    ("ci.workflow", ".github/workflows/x\n.yml"),
    ("ci.branch", "main;id"),
    ("ci.branch", "$(id)"),
    ("registry.ca_file", "/tmp/ca\x00.crt"),
    ("registry.ca_file", "/tmp/ca\n.crt"),
    ("workloads.manifests[0]", "k8s\x1b[31m"),
    ("ci.repo_dir", "..\n"),
    ("ci.repo_dir", "a" * 5000),
    ("vault.path", "secret/gitea; id"),
    ("cluster.context", "ctx\nhelper_image: evil"),
]


def with_value(field: str, value) -> dict:
    data = copy.deepcopy(BASE)
    section, _, rest = field.partition(".")
    if section.startswith("images[0]"):
        key = rest.split("[")[0]
        data["images"][0][key] = [value] if rest.endswith("[0]") else value
        return data
    key, _, index = rest.partition("[")
    data.setdefault(section, {})[key] = [value] if index else value
    return data


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 60
    assert len(set(CORPUS)) == len(CORPUS)


@pytest.mark.parametrize("field,value", CORPUS, ids=[f"{i}-{f}" for i, (f, _) in enumerate(CORPUS)])
def test_hostile_value_is_refused_at_load_naming_the_field(field, value):
    text = yaml.safe_dump(with_value(field, value), allow_unicode=True)
    with pytest.raises(P.PlanError) as err:
        P.loads(text)
    named = [p for p in err.value.problems if p.startswith(f"plan: {field}: ")]
    assert named, err.value.problems
    assert all("\n" not in p and "\r" not in p and "\x00" not in p for p in err.value.problems)


def test_base_plan_of_the_corpus_loads():
    P.loads(yaml.safe_dump(BASE))


@pytest.mark.parametrize("exploit", [EXPLOIT, EXPLOIT_NO_SLASH])
def test_the_exploit_from_the_issue_is_refused_by_the_cli_with_exit_2(tmp_path, exploit):
    f = tmp_path / "plan.yaml"
    data = with_value("registry.host", exploit)
    data["images"][0]["target"] = exploit + "/jaybrto/gwa-webhook"
    f.write_text(yaml.safe_dump(data))
    res = run_cli(None, "plan", "--plan", str(f))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert all(ln.startswith("ghcr2gitea: plan: ") for ln in lines), lines
    assert any(ln.startswith("ghcr2gitea: plan: registry.host: ") and "zone id" in ln for ln in lines)


# Values pasted unquoted into the plan file: YAML specials the loader itself refuses, one line each.
RAW = [
    ("alias", "registry:\n  host: *a\n", "alias"),
    ("anchor", "registry:\n  host: &a registry.example.test\n", "anchor"),
    ("python tag", "registry:\n  host: !!python/object:os.system x\n", "constructor"),
    ("complex key", "registry:\n  host: {? x: y}\n", "expected a string"),
    ("open flow", "registry:\n  host: {\n", "not valid YAML"),
    ("sequence", "registry:\n  host:\n  - x\n", "expected a string"),
    ("duplicate key", "registry:\n  host: a.example.test\n  host: registry.example.test\n", "duplicate key"),
    ("raw NUL", "registry:\n  host: registry.example.test\x00\n", "line 11 column 30: the character #x0000"),
    ("raw escape", "registry:\n  host: registry.example.test\x1b[2J\n", "the character #x001b"),
]


@pytest.mark.parametrize("name,snippet,words", RAW, ids=[r[0] for r in RAW])
def test_yaml_specials_in_the_file_are_one_line_and_exit_2(tmp_path, name, snippet, words):
    base = yaml.safe_dump({k: v for k, v in BASE.items() if k != "registry"})
    f = tmp_path / "plan.yaml"
    f.write_text(base + snippet)
    res = run_cli(None, "plan", "--plan", str(f))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert all(ln.startswith("ghcr2gitea: plan: ") for ln in lines), lines
    assert any(words in ln for ln in lines), lines


# Values the grammar legitimately lets through, whose characters a shell would act on: proven inert.
ALLOWED = [
    ("ci.workflow", ".github/workflows/$(touch /tmp/pwned; systemctl restart k3s).yml"),
    ("ci.repo_dir", "/tmp/it's `touch /tmp/pwned` $(systemctl --no-block restart k3s)"),
    ("workloads.manifests[0]", "/nonexistent/$(touch /tmp/pwned)"),
    ("gitea.root_url", "https://gitea.k3s.example.test/a:b@c,d=e+f~g/"),
    ("gitea.username", "registry.user_x"),
]


def test_allowed_values_load(tmp_path):
    for field, value in ALLOWED:
        P.loads(yaml.safe_dump(with_value(field, value)))


def test_allowed_odd_values_are_inert_on_the_sandbox(sandbox, tmp_path):
    data = yaml.safe_load(sandbox.plan.read_text())
    for field, value in ALLOWED:
        section, _, key = field.partition(".")
        key, _, index = key.partition("[")
        if field == "gitea.root_url":  # keep the sandbox's host and port, add the odd path
            value = data["gitea"]["root_url"].rstrip("/") + "/a:b@c,d=e+f~g/"
        data.setdefault(section, {})[key] = [value] if index else value
    f = tmp_path / "plan.yaml"
    f.write_text(yaml.safe_dump(data))
    P.load(f)
    before = sandbox_state(sandbox)["nodes"]
    assert all(n["restarts"] == [] for n in before.values())
    # docs/usage.md: plan 3 = changes pending, 2 = a stage cannot plan (the manifest path does not exist)
    for args, codes in ((("plan",), (2, 3)), (("audit", "--node-probes"), (0, 1, 2))):
        res = run_cli(sandbox, *args, "--plan", str(f), "--kubeconfig", str(sandbox.kubeconfig))
        assert "Traceback" not in res.stderr, res.stderr
        assert res.returncode in codes, (args, res.returncode, res.stdout[-2000:], res.stderr)
    state = sandbox_state(sandbox)
    facts_pods = [p for p in state["pods"] if p["labels"].get("ghcr2gitea.io/role") == "facts"
                  and p["phase"] == "Succeeded"]
    assert {p["node"] for p in facts_pods} == set(before), "the read-only node probes ran on every node"
    after = state["nodes"]
    for name, node in after.items():
        assert node["files"] == before[name]["files"], name
        assert node["restarts"] == [], name
    assert not (tmp_path / "pwned").exists()


# One value of each kind through the real CLI (the rest share its code path: plan.load → one line per problem).
CLI_SAMPLE = [EXPLOIT_NO_SLASH, "registry.example.test\x00", "registry.example.test\ncluster:\n  helper_image: evil/rootkit",
              "r\u0435gistry.example.test", "registry.example.test:\u0661\u0662\u0663", "a" * 300, "*a", "`id`.example.test",
              "registry.example.test'", "registry.example.test\u202e"]


@pytest.mark.parametrize("value", CLI_SAMPLE, ids=range(len(CLI_SAMPLE)))
def test_the_cli_refuses_hostile_hosts_with_one_line_each_and_exit_2(tmp_path, value):
    assert ("registry.host", value) in CORPUS
    f = tmp_path / "plan.yaml"
    f.write_text(yaml.safe_dump(with_value("registry.host", value)))
    res = run_cli(None, "plan", "--plan", str(f))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert all(ln.startswith("ghcr2gitea: plan: ") for ln in lines), lines
    assert any(ln.startswith("ghcr2gitea: plan: registry.host: ") for ln in lines)
    assert "\x00" not in res.stderr and "\u202e" not in res.stderr and "evil/rootkit\n" not in res.stderr
