"""The node scripts behind the registries merge, run on the simulated shell AND on a real dash with GNU sed/grep.

The facts probe masks on the node, the compare probe answers one bit per line, and the write
splices the node's own lines with the wizard's chunks — refusing when the file changed since it
was read. Every credential value of the node's file stays on the node.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import types

import pytest

from sandbox.memfs import MemFS
from sandbox.shell import ShellContext, run_script
from wizard import masking as M
from wizard import registries as R
from wizard.credentials import Secret

OTHER = "other-registry-S3cret"
OLD = "old-token-5d1c9e0b7a3f28e4c6b1"
TOKEN = Secret("*cur: it's-7e2a9c4f1b8d3e6a0c5f")
HOSTS = ("registry.example.test:5000", "gitea.example.test")
EXISTING = f"""\
# kept as it is
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.example.test"
configs:
  "quay.example.test":
    auth:
      username: robot
      password: {OTHER}   # theirs
  "registry.example.test:5000":
    tls:
      insecure_skip_verify: true
    auth:
      username: registry-user
      password: {OLD}
other: 1"""  # no newline at the end


def plan():
    return types.SimpleNamespace(node_hosts=HOSTS, node_tls="insecure", username="registry-user")


class SimNode:
    """One node's files, running scripts on the simulated shell."""

    def __init__(self, text: str | None):
        self.fs = MemFS(clock=lambda: 1795700703.0)
        self.fs.mkdir("/etc/rancher/k3s", parents=True)
        if text is not None:
            self.fs.write(R.PATH, text.encode(), mode=0o600)

    extra: dict = {}

    def run(self, script: str, env: dict | None = None):
        async def systemctl(argv, stdin, ctx):
            return 0, b"loaded\n" if "LoadState" in argv else b"active\n" if "ActiveState" in argv else b"\n", b""
        ctx = ShellContext(fs=self.fs, hostname="n1", env=env or {}, commands={"systemctl": systemctl, **self.extra})
        res = asyncio.run(run_script(script, ctx))
        return res.rc, res.stdout + res.stderr

    def read(self) -> str | None:
        return self.fs.read(R.PATH).decode() if self.fs.exists(R.PATH) else None

    def names(self) -> list[str]:
        return sorted(self.fs.listdir("/etc/rancher/k3s"))


class RealNode:
    """The same scripts on /bin/sh with the machine's sed, grep, base64, sha256sum; /etc/rancher/k3s moved to tmp."""

    def __init__(self, tmp, text: str | None):
        for tool in ("sed", "grep", "sha256sum", "base64", "stat"):
            if shutil.which(tool) is None:
                pytest.skip(f"{tool} is not installed")
        self.root = tmp / "k3s"
        self.root.mkdir()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        stub = self.bin / "systemctl"
        stub.write_text("#!/bin/sh\ncase \"$*\" in *LoadState*) echo loaded;; *ActiveState*) echo active;; *) echo;; esac\n")
        stub.chmod(0o755)
        if text is not None:
            (self.root / "registries.yaml").write_text(text)
            (self.root / "registries.yaml").chmod(0o600)

    def run(self, script: str, env: dict | None = None):
        script = script.replace("/etc/rancher/k3s", str(self.root))
        full = {"PATH": f"{self.bin}:/usr/bin:/bin", **(env or {})}
        res = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=full, timeout=30)
        return res.returncode, res.stdout + res.stderr

    def read(self) -> str | None:
        f = self.root / "registries.yaml"
        return f.read_bytes().decode() if f.exists() else None

    def names(self) -> list[str]:
        return sorted(os.listdir(self.root))


@pytest.fixture(params=["simulated", "real"])
def node_kind(request):
    return request.param


def make(kind, tmp_path, text):
    return SimNode(text) if kind == "simulated" else RealNode(tmp_path, text)


def probe(node):
    rc, out = node.run(R.facts_script(plan()))
    assert rc == 0, out
    return R.parse_facts("n1", out, plan()), out


def chunk_env(np) -> dict:
    return {f"CHUNK_{i}": c for i, c in enumerate(np.chunks)}


def merge_plan(node):
    facts, out = probe(node)
    lay = R.layout(facts.text, R.PATH)
    asks = [(line, R.token_value_text(TOKEN)) for line in R.own_password_lines(lay, plan()).values()]
    rc, cmp_out = node.run(R.compare_script(asks, "salt-1"))
    assert rc == 0, cmp_out
    same = R.parse_compare(cmp_out, asks)
    return R.plan_node("n1", lay, plan(), TOKEN, same), out + cmp_out


def test_probe_prints_the_masked_file_and_the_merge_keeps_every_other_line(node_kind, tmp_path):
    node = make(node_kind, tmp_path, EXISTING)
    np, logs = merge_plan(node)
    assert np is not None and np.had_file
    assert OTHER not in logs and OLD not in logs
    rc, out = node.run(R.write_script(np, R.PATH + ".bak-1", secret="s").text(), chunk_env(np))
    assert rc == 0, out
    new = node.read()
    head = EXISTING[:EXISTING.index('  "registry.example.test:5000":')]
    assert new.startswith(head), new  # the comment, the mirror and quay's entry, byte for byte
    assert new.endswith("\nother: 1"), new  # the line after configs too, still without a newline
    import yaml
    data = yaml.safe_load(new)
    assert data["configs"]["quay.example.test"]["auth"]["password"] == OTHER
    for host in HOSTS:
        assert data["configs"][host]["auth"]["password"] == TOKEN.reveal()
    assert node.read() is not None and R.PATH.rsplit("/", 1)[1] + ".bak-1" in node.names()
    assert "registries.yaml.ghcr2gitea-tmp" not in node.names()
    # read back: the masked view is the expected one and the node finds the token where it was put
    facts, out = probe(node)
    assert facts.text == np.new_masked and OTHER not in out and TOKEN.reveal() not in out
    rc, out = node.run(R.compare_script(list(np.new_checks), "salt-2"))
    assert rc == 0 and all(R.parse_compare(out, list(np.new_checks)).values()), out
    assert len(np.new_checks) == 2
    again, _ = merge_plan(node)
    assert again is None  # nothing left to change


def test_write_refuses_when_the_file_changed_since_the_probe(node_kind, tmp_path):
    node = make(node_kind, tmp_path, EXISTING)
    np, _ = merge_plan(node)
    changed = EXISTING.replace("https://mirror.example.test", "https://mirror2.example.test")
    node_path_text = changed
    if node_kind == "simulated":
        node.fs.write(R.PATH, node_path_text.encode(), mode=0o600)
    else:
        (node.root / "registries.yaml").write_text(node_path_text)
    names = node.names()
    rc, out = node.run(R.write_script(np, R.PATH + ".bak-1", secret="s").text(), chunk_env(np))
    assert rc == R.CHANGED_EXIT and R.CHANGED_MESSAGE in out, out
    assert node.read() == changed and node.names() == names  # nothing written, no backup or temp file left


def test_write_refuses_a_file_that_appeared_since_the_probe(node_kind, tmp_path):
    node = make(node_kind, tmp_path, None)
    facts, _ = probe(node)
    assert facts.text is None and not facts.present
    np = R.plan_node("n1", None, plan(), TOKEN, {})
    if node_kind == "simulated":
        node.fs.write(R.PATH, b"configs: {}\n", mode=0o600)
    else:
        (node.root / "registries.yaml").write_text("configs: {}\n")
    rc, out = node.run(R.write_script(np, None, secret="s").text(), chunk_env(np))
    assert rc == R.CHANGED_EXIT and node.read() == "configs: {}\n"


UNMASKABLE = {
    "flow mapping": "configs:\n  q:\n    auth: {username: u, password: flow-S3cret}\n",
    "block scalar": "configs:\n  q:\n    auth:\n      password: |\n        flow-S3cret\n",
    "unclosed quote": "configs:\n  q:\n    auth:\n      password: \"flow-S3cret\n        more\"\n",
    "continued plain": "configs:\n  q:\n    auth:\n      password: flow-S3cret\n        more\n",
    "alias": "configs:\n  q:\n    auth:\n      password: *flow-S3cret\n",
    "anchor": "configs:\n  q:\n    auth:\n      password: &a flow-S3cret\n",
    "json": '{"configs": {"q": {"auth": {"password": "flow-S3cret"}}}}\n',
    "tag": "configs:\n  q:\n    auth:\n      password: !!str flow-S3cret\n",
}


@pytest.mark.parametrize("case", sorted(UNMASKABLE))
def test_a_file_the_node_cannot_mask_is_reported_by_line_without_its_values(node_kind, tmp_path, case):
    node = make(node_kind, tmp_path, UNMASKABLE[case])
    facts, out = probe(node)
    assert "flow-S3cret" not in out and "more" not in out
    assert facts.present and facts.text is None and facts.unmaskable, out
    assert "rewrite it in block style" in facts.unmaskable


def test_a_node_whose_grep_cannot_do_what_the_probe_needs_prints_no_file():
    """Fail closed: a grep without -a (say, a minimal BusyBox) would find no unsafe line; the self-test notices."""
    node = SimNode(UNMASKABLE["json"])  # the line mask alone would print this one as it is

    async def old_grep(argv, stdin, ctx):
        return (2, b"", b"grep: invalid option -- 'a'\n") if "-a" in argv else (1, b"", b"")
    node.extra = {"grep": old_grep}
    facts, out = probe(node)
    assert "flow-S3cret" not in out and "masked=" not in out
    assert facts.present and facts.text is None and "self-test" in facts.unmaskable


def test_compare_answers_one_bit_and_carries_no_value(tmp_path):
    node = SimNode(EXISTING)
    script = R.compare_script([(16, OLD), (16, "something-else"), (10, OTHER)], "salt-3")
    assert OLD not in script and OTHER not in script
    rc, out = node.run(script)
    assert rc == 0, out
    assert out.split() == ["same_0=1", "same_1=0", "same_2=0"]  # line 10's value has a comment after it


def test_python_mask_is_what_the_node_prints(tmp_path):
    """masking.mask_lines (the wizard's replica) and the node's sed pipeline agree byte for byte."""
    texts = [EXISTING, EXISTING + "\n", "a: 1\r\n  password: x\r\n", "  - token:\tv # c\n#x\n", "",
             "configs:\n  h:\n    auth:\n      Password: \"a\\\"b\"\n      identity_token: 'it''s'\n"]
    for i, text in enumerate(texts):
        for kind in ("simulated", "real"):
            sub = tmp_path / f"{kind}{i}"
            sub.mkdir()
            node = make(kind, sub, text)
            facts, _ = probe(node)
            assert facts.text == M.mask_lines(text), (kind, text)
            assert M.unsafe_lines(text) == ([], [])


SHAPES = {
    "no configs": "mirrors:\n  docker.io:\n    endpoint:\n      - https://mirror.example.test\n",
    "empty configs": "configs: {}\nmirrors:\n  docker.io:\n    endpoint: [\"https://m\"]\n",
    "null configs": "configs:\n# nothing yet\n",
    "only comments": "# managed by hand\n",
    "empty file": "",
    "indented by 4": "configs:\n    quay.example.test:\n        auth:\n            username: robot\n"
                     f"            password: {OTHER}\n",
    "crlf": f"configs:\r\n  quay.example.test:\r\n    auth:\r\n      password: {OTHER}\r\n",
    "own entry keeps its other keys": "configs:\n  gitea.example.test:\n    tls:\n      cert_file: /c.pem\n"
                                      f"    auth:\n      username: someone\n      auth: {OTHER}\n",
    "own entry last, no newline": f"configs:\n  \"registry.example.test:5000\":\n    auth:\n      password: {OLD}",
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_splice_works_for_every_file_shape_and_keeps_the_nodes_lines(node_kind, tmp_path, shape):
    import yaml
    text = SHAPES[shape]
    node = make(node_kind, tmp_path, text)
    np, logs = merge_plan(node)
    assert OTHER not in logs
    rc, out = node.run(R.write_script(np, R.PATH + ".bak-1", secret="s").text(), chunk_env(np))
    assert rc == 0, out
    new = node.read()
    data = yaml.safe_load(new)
    want = R.merge(yaml.safe_load(text) or {}, plan(), TOKEN)
    if shape == "own entry keeps its other keys":
        assert data["configs"]["gitea.example.test"]["tls"]["cert_file"] == "/c.pem"
        assert "auth" not in data["configs"]["gitea.example.test"]["auth"]  # the old auth string is dropped
    assert data == want, new
    assert "\n\n" not in new.replace("# managed by hand\n", "")  # no stray blank line where chunks meet
    kept = iter(new.splitlines(keepends=True))
    own = {ln for ln in text.splitlines(keepends=True) if shape.startswith("own entry")}
    assert all(ln in kept for ln in text.splitlines(keepends=True) if ln not in own and ln.strip() not in
               ("configs: {}", "configs:")), new  # every other line, in order, byte for byte
    facts, _ = probe(node)
    assert facts.text == np.new_masked
    again, _ = merge_plan(node)
    assert again is None


# ------------------------------------------------------------------ registry.node_tls: ca — the CA bundle
BUNDLE = "-----BEGIN CERTIFICATE-----\nQUFBQQ==\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nQkJCQg==\n" \
         "-----END CERTIFICATE-----\n"
CA_NAME = R.CA_PATH.rsplit("/", 1)[1]


def put_ca(node, kind, text: str) -> None:
    if kind == "simulated":
        node.fs.write(R.CA_PATH, text.encode(), mode=0o600)
    else:
        (node.root / CA_NAME).write_text(text)
        (node.root / CA_NAME).chmod(0o600)


def read_ca(node, kind) -> tuple[str | None, int | None]:
    if kind == "simulated":
        return (node.fs.read(R.CA_PATH).decode(), node.fs.stat(R.CA_PATH).mode & 0o777) \
            if node.fs.exists(R.CA_PATH) else (None, None)
    f = node.root / CA_NAME
    return (f.read_text(), f.stat().st_mode & 0o777) if f.exists() else (None, None)


def test_ca_bundle_is_backed_up_written_private_then_644_and_read_back_by_sha(node_kind, tmp_path):
    node = make(node_kind, tmp_path, None)
    put_ca(node, node_kind, "an operator's old bundle\n")
    facts, _ = probe(node)
    assert facts.ca_present and facts.ca_mode == "600" and facts.ca_sha is not None
    ca = R.plan_ca("n1", facts, BUNDLE)
    assert ca is not None and ca.had_file
    rc, out = node.run(R.write_script(None, None, secret="s", ca=ca, ca_backup=R.CA_PATH + ".bak-1").text(),
                       {"CA_BUNDLE": BUNDLE})
    assert rc == 0, out
    assert read_ca(node, node_kind) == (BUNDLE, 0o644)
    assert CA_NAME + ".bak-1" in node.names() and CA_NAME + ".ghcr2gitea-tmp" not in node.names()
    after, _ = probe(node)
    assert after.ca_sha == ca.sha and after.ca_mode == R.CA_MODE
    assert R.plan_ca("n1", after, BUNDLE) is None  # nothing left to change


def test_ca_bundle_that_does_not_arrive_intact_is_not_installed(node_kind, tmp_path):
    node = make(node_kind, tmp_path, None)
    put_ca(node, node_kind, "old\n")
    facts, _ = probe(node)
    ca = R.plan_ca("n1", facts, BUNDLE)
    rc, out = node.run(R.write_script(None, None, secret="s", ca=ca).text(), {"CA_BUNDLE": BUNDLE[:-30]})
    assert rc == R.CA_EXIT and R.CA_MESSAGE in out, out
    assert read_ca(node, node_kind)[0] == "old\n" and CA_NAME + ".ghcr2gitea-tmp" not in node.names()


def test_ca_bundle_and_registries_yaml_are_written_by_one_script(node_kind, tmp_path):
    node = make(node_kind, tmp_path, None)
    facts, _ = probe(node)
    assert not facts.ca_present and facts.ca_sha is None
    np = R.plan_node("n1", None, plan(), TOKEN, {})
    ca = R.plan_ca("n1", facts, BUNDLE)
    rc, out = node.run(R.write_script(np, None, secret="s", ca=ca).text(), {**chunk_env(np), "CA_BUNDLE": BUNDLE})
    assert rc == 0, out
    assert read_ca(node, node_kind) == (BUNDLE, 0o644) and node.read() is not None
