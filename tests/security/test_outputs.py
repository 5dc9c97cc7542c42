"""Outputs machines read stay valid, bad inputs get one line (never a traceback), writes never leave their tree.

Issue 11 §6: each case here failed on the code before it (retry notices on stdout, tracebacks from the
kubernetes client's kubeconfig loader, a FIFO that hung `rewrite`, a read-only manifest replaced, ...).
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml
from helpers import run_cli


def _no_traceback(res) -> None:
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr


@pytest.mark.parametrize("fmt", ["json", "markdown"])
def test_audit_report_stays_parseable_under_api_faults(make_sandbox, fmt, reliability):
    sb = make_sandbox(api_fault_rate=0.2)
    res = run_cli(sb, "audit", "--plan", str(sb.plan), "--format", fmt, timeout=240)
    _no_traceback(res)
    assert res.returncode in (0, 1), res.stderr
    assert "retrying" not in res.stdout
    if fmt == "json":
        report = json.loads(res.stdout)
        assert report["stages"] and all("checks" in st for st in report["stages"])
    else:
        assert res.stdout.startswith("# ghcr2gitea audit")
        assert "| Stage | Status | Check | Cause | Fix |" in res.stdout
    reliability.record("API faults", f"audit --format {fmt} with 20% of API requests failing",
                       f"exit {res.returncode}; stdout one valid {fmt} report, retry notes on stderr only")


def _kubeconfig_variant(sb, tmp_path, name, mutate) -> str:
    k = yaml.safe_load(sb.kubeconfig.read_text())
    mutate(k)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(k))
    return str(path)


def _other_ca_pem() -> str:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some other cluster's CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_cluster_credentials_and_trust_are_named_not_retried(sandbox, tmp_path, reliability):
    import base64

    def wrong_ca(k):
        c = k["clusters"][0]["cluster"]
        c.pop("certificate-authority", None)
        c["certificate-authority-data"] = base64.b64encode(_other_ca_pem().encode()).decode()

    def wrong_token(k):
        k["users"][0]["user"] = {"token": "not-this-clusters-token"}

    for name, mutate, words in (("ca", wrong_ca, "not trusted by the kubeconfig's CA"),
                                ("401", wrong_token, "refused the kubeconfig's credentials (401")):
        kc = _kubeconfig_variant(sandbox, tmp_path, f"kc-{name}", mutate)
        for cmd in (["audit", "--format", "json"], ["apply", "--yes"], ["plan"]):
            res = run_cli(sandbox, *cmd, "--plan", str(sandbox.plan), "--kubeconfig", kc, "--api-patience", "60",
                          timeout=50)  # retried as transient, these would run for the whole minute
            _no_traceback(res)
            assert res.returncode == 2, (cmd, res.stdout, res.stderr)
            assert words in res.stderr, (cmd, res.stderr)
            assert "retrying" not in res.stderr
            assert "internal error" not in res.stderr
            if cmd[0] == "audit":
                assert words in json.loads(res.stdout)["error"]
    reliability.record("bad input", "a kubeconfig whose CA does not match the server; one whose token the API "
                       "refuses (401)", "plan, apply and audit exit 2 at once (not retried) with one line naming the "
                       "CA or the credentials; audit --format json still prints a JSON report with the error")


def test_bad_kubeconfig_and_token_files_get_one_line(sandbox, tmp_path, reliability):
    bad_yaml = tmp_path / "kc-bad"
    bad_yaml.write_text("apiVersion: v1\nclusters: [oops\n")
    binary = tmp_path / "kc-bin"
    binary.write_bytes(b"\xff\xfe\x00binary")
    folder = tmp_path / "kc-dir"
    folder.mkdir()
    for kc, words in ((bad_yaml, "not valid YAML at line"), (binary, "not UTF-8"), (folder, "not a regular file")):
        res = run_cli(sandbox, "audit", "--plan", str(sandbox.plan), "--kubeconfig", str(kc), "--format", "json")
        _no_traceback(res)
        assert res.returncode == 2 and words in res.stderr, res.stderr
        assert json.loads(res.stdout)["error"]
    tokdir = tmp_path / "tokdir"
    tokdir.mkdir(mode=0o700)
    latin = tmp_path / "latin1-token"
    latin.write_bytes("tökén".encode("latin-1"))
    latin.chmod(0o600)
    for tf, words in ((tokdir, "not a regular file"), (latin, "not UTF-8")):
        res = run_cli(sandbox, "apply", "--plan", str(sandbox.plan), "--yes", "--token-file", str(tf), token=None)
        _no_traceback(res)
        assert res.returncode == 2 and f"--token-file {tf}: {words}" in res.stderr, res.stderr
    reliability.record("bad input", "a kubeconfig that is not YAML, binary, or a folder; a token file that is a "
                       "folder or not UTF-8", "exit 2, one line naming the file and what is wrong, no traceback")


def test_rewrite_refuses_fifo_device_and_huge_files(sandbox, tmp_path, reliability):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as f:
        f.truncate(17 * 1024 * 1024)
    for path, words in ((fifo, "not a regular file"), ("/dev/zero", "not a regular file"), (huge, "too big")):
        res = run_cli(None, "rewrite", "--plan", str(sandbox.plan), str(path), timeout=20)  # a FIFO used to hang
        _no_traceback(res)
        assert res.returncode == 2 and words in res.stderr, res.stderr
    reliability.record("bad input", "rewrite given a FIFO, /dev/zero or a 17 MiB file", "exit 2, each refused "
                       "without being opened or read whole")


MANIFEST = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: ghcr.io/jaybrto/gwa-webhook:latest  # the webhook
"""


def test_rewrite_never_writes_through_a_symlink_out_of_the_tree_or_over_a_read_only_file(sandbox, tmp_path,
                                                                                          reliability):
    outside = tmp_path / "outside.yaml"
    outside.write_text(MANIFEST)
    tree = tmp_path / "k8s"
    tree.mkdir()
    (tree / "inside.yaml").write_text(MANIFEST)
    (tree / "escape.yaml").symlink_to(outside)
    res = run_cli(None, "rewrite", "--plan", str(sandbox.plan), "--write", str(tree))
    _no_traceback(res)
    assert res.returncode == 2 and "outside" in res.stderr and "nothing written" in res.stderr, res.stderr
    assert outside.read_text() == MANIFEST
    assert (tree / "inside.yaml").read_text() == MANIFEST, "a refusal must write nothing, not half"

    (tree / "escape.yaml").unlink()
    ro = tree / "inside.yaml"
    ro.chmod(0o444)
    res = run_cli(None, "rewrite", "--plan", str(sandbox.plan), "--write", str(tree))
    _no_traceback(res)
    assert res.returncode == 2 and "read-only" in res.stderr, res.stderr
    assert ro.read_text() == MANIFEST and stat.S_IMODE(ro.stat().st_mode) == 0o444

    ro.chmod(0o644)
    res = run_cli(None, "rewrite", "--plan", str(sandbox.plan), "--write", str(tree))
    assert res.returncode == 0, res.stderr
    assert "/jaybrto/gwa-webhook:latest  # the webhook" in ro.read_text()
    assert "ghcr.io" not in ro.read_text()
    reliability.record("unsafe write", "rewrite --write over a folder holding a symlink to a file outside it, then "
                       "a read-only manifest", "exit 2 and nothing written (not even the safe files); once both are "
                       "fixed the rewrite goes through")


def test_export_refuses_a_folder_that_is_not_empty_and_symlinks_out(sandbox, tmp_path, reliability):
    out = tmp_path / "gitops"
    out.mkdir()
    (out / "mine.txt").write_text("the operator's own file\n")
    res = run_cli(sandbox, "export", "--plan", str(sandbox.plan), "--dir", str(out))
    _no_traceback(res)
    assert res.returncode == 2 and "not empty" in res.stderr and "--force" in res.stderr, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]

    res = run_cli(sandbox, "export", "--plan", str(sandbox.plan), "--dir", str(out), "--force")
    assert res.returncode == 0, res.stderr
    assert (out / "mine.txt").read_text() == "the operator's own file\n"
    written = [p for p in out.rglob("*") if p.is_file() and p.name != "mine.txt"]
    assert written

    # a file of the export that is a symlink leading out of the folder is refused, and nothing is written
    victim = tmp_path / "victim.txt"
    victim.write_text("not the export's\n")
    target = written[0]
    target.unlink()
    target.symlink_to(victim)
    before = {p: p.read_bytes() for p in written[1:]}
    res = run_cli(sandbox, "export", "--plan", str(sandbox.plan), "--dir", str(out), "--force")
    _no_traceback(res)
    assert res.returncode == 2 and "outside" in res.stderr, res.stderr
    assert victim.read_text() == "not the export's\n"
    assert {p: p.read_bytes() for p in written[1:]} == before
    reliability.record("unsafe write", "export into a folder with the operator's files; then with one export file "
                       "replaced by a symlink out of the folder", "refused without --force; with it the operator's "
                       "file is kept; the symlink makes it exit 2 with nothing written")
