"""Diffs mask credential FIELDS, before and after, whatever their value — not a search for today's token."""

from __future__ import annotations

import base64
import json

from wizard import masking as M
from wizard.credentials import Secret
from wizard.stages.base import object_diff, text_diff

TOKEN = Secret("*new: it's-token-8c1d")
OLD = "old-token-3f9a0e6b"
OTHER = "other-registry-S3cret"
KEY = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNb\n-----END PRIVATE KEY-----\n")


def dockerconfig(password: str) -> str:
    auth = base64.b64encode(f"registry-user:{password}".encode()).decode()
    return json.dumps({"auths": {"registry.example.test": {"username": "registry-user", "password": password,
                                                           "auth": auth}}})


def secret(password: str, key: str = KEY) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "push", "namespace": "default"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(dockerconfig(password).encode()).decode(),
                     "tls.key": base64.b64encode(key.encode()).decode()}}


def leaks(text: str, *values: str) -> list[str]:
    found = []
    for v in values:
        for form in (v, base64.b64encode(v.encode()).decode()[:-4], v.replace("'", "''"), json.dumps(v)[1:-1]):
            if form in text:
                found.append(form)
    return found


def test_a_rotated_dockerconfigjson_shows_its_hosts_and_a_changed_fingerprint_only():
    diff = object_diff(secret(OLD), secret(TOKEN.reveal()), "Secret default/push", TOKEN)
    assert not leaks(diff, OLD, TOKEN.reveal(), "registry-user:" + OLD)
    assert "registry.example.test" in diff and "username: registry-user" in diff
    removed = [ln for ln in diff.splitlines() if ln.startswith("-") and "password:" in ln]
    added = [ln for ln in diff.splitlines() if ln.startswith("+") and "password:" in ln]
    assert removed and added and removed[0][1:] != added[0][1:]  # changed, and visibly so
    assert all("<secret, sha256:" in ln for ln in removed + added)
    assert "tls.key" in diff and "MIIEvQ" not in diff
    assert "password" not in object_diff(secret(OLD), secret(OLD), "Secret default/push")  # unchanged: no line


def test_credentials_in_any_object_or_text_field_are_masked():
    cm = {"kind": "ConfigMap", "metadata": {"name": "x"},
          "data": {"registries.yaml": f"configs:\n  q:\n    auth:\n      password: {OTHER}\n",
                   "inline.json": json.dumps({"password": OTHER}), "key.pem": KEY},
          "spec": {"env": [{"name": "A", "token": OLD}], "automountServiceAccountToken": False}}
    diff = object_diff(None, cm, "ConfigMap default/x")
    assert not leaks(diff, OTHER, OLD) and "MIIEvQ" not in diff
    assert "automountServiceAccountToken: false" in diff


def test_a_registries_text_diff_masks_every_credential_by_structure():
    before = (f"configs:\n  quay:\n    auth:\n      password: {OTHER}\n      auth: c2VjcmV0\n"
              f"  reg:\n    auth:\n      password: {OLD}\n      identity_token: \"{OLD}\"\n")
    after = before.replace(OLD, TOKEN.reveal().replace("'", "''")).replace(f"password: {TOKEN.reveal()}",
                                                                           f"password: '{TOKEN.reveal()}'")
    diff = text_diff(before, after, "node/registries.yaml")  # no secret passed: structure alone
    assert diff and not leaks(diff, OTHER, OLD, TOKEN.reveal(), "c2VjcmV0")
    flow = text_diff("", "auths: {reg: {password: " + OTHER + "}}\nkey: |\n" +
                     "".join("  " + ln + "\n" for ln in KEY.splitlines()), "x")
    assert OTHER not in flow and "MIIEvQ" not in flow


def test_fingerprints_are_keyed_so_a_weak_password_cannot_be_looked_up():
    import hashlib
    fp = M.fingerprint("password1")
    assert fp.startswith("<secret, sha256:") and hashlib.sha256(b"password1").hexdigest()[:12] not in fp
    assert fp == M.fingerprint("password1") != M.fingerprint("password2")


def test_env_credentials_and_a_repo_secret_manifest_are_masked_in_workload_and_manifest_diffs():
    from wizard.manifests import Rewrite
    dep = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:1", "env": [
        {"name": "GITEA_TOKEN", "value": OLD}, {"name": "LOG_LEVEL", "value": "debug"}]}]}}}}
    new = json.loads(json.dumps(dep))
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "b:1"
    diff = object_diff(dep, new, "Deployment default/app")
    assert OLD not in diff and "image: b:1" in diff
    assert "value: debug" in diff  # an env value that is no credential stays readable
    manifest = (f"kind: Secret\ndata:\n  .dockerconfigjson: {base64.b64encode(dockerconfig(OTHER).encode()).decode()}\n"
                f"  tls.key: {base64.b64encode(KEY.encode()).decode()}\n  password: {OTHER}\n---\n"
                "kind: Deployment\nspec:\n  image: ghcr.io/x/app:1\n")
    rw = Rewrite("k.yaml", manifest, manifest.replace("ghcr.io/x/app:1", "registry.example.test/x/app:1"))
    shown = rw.diff()
    assert "registry.example.test/x/app:1" in shown
    assert not leaks(shown, OTHER) and base64.b64encode(dockerconfig(OTHER).encode()).decode()[:40] not in shown
    assert base64.b64encode(KEY.encode()).decode()[:40] not in shown


def test_a_config_and_a_certificate_read_as_their_files_and_a_public_certificate_by_what_it_says():
    from wizard.certs import make_proxy_cert
    cert = make_proxy_cert("gitea.k3s.example.test", 30)
    conf = "server {\n  listen 443 ssl;\n\n  resolver 10.43.0.10 valid=30s;\n}\n"
    cm = {"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"default.conf": conf,
                                                                  "ca.crt": cert.cert_pem.decode()}}
    diff = object_diff(None, cm, "ConfigMap default/x")
    assert "+  default.conf: |\n+    server {\n+      listen 443 ssl;\n+\n+      resolver 10.43.0.10" in diff
    pem = cert.cert_pem.decode().splitlines()
    assert f"+    {pem[0]}\n+    {pem[1]}\n" in diff  # line after line, no blank '+' line between
    tls = {"kind": "Secret", "metadata": {"name": "t"}, "type": "kubernetes.io/tls",
           "data": {"tls.crt": base64.b64encode(cert.cert_pem).decode(),
                    "tls.key": base64.b64encode(cert.key_pem).decode()}}
    diff = object_diff(None, tls, "Secret default/t")
    assert "subject: gitea.k3s.example.test" in diff and "- gitea.k3s.example.test" in diff  # the SANs
    assert "not_after: '20" in diff and "sha256: " in diff and "certificate:" in diff
    assert "tls.key: <secret, sha256:" in diff and "PRIVATE" not in diff
    assert base64.b64encode(cert.key_pem).decode()[30:70] not in diff
    # a 'certificate' that carries its key is no public certificate: fingerprinted whole
    bundled = dict(tls, data={"tls.crt": base64.b64encode(cert.cert_pem + cert.key_pem).decode()})
    diff = object_diff(None, bundled, "Secret default/t")
    assert "tls.crt: <secret, sha256:" in diff and "subject" not in diff
