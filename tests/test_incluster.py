"""In a pod the wizard uses the in-cluster configuration (wizard/kube.py): KUBERNETES_SERVICE_HOST/PORT and
the service account's token and CA files, when no kubeconfig is given or found (kubectl's order)."""

from __future__ import annotations

import pytest
import yaml

from wizard import kube
from wizard.kube import ClusterUnreachable, api_client


@pytest.fixture
def pod(tmp_path, monkeypatch):
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("sa-token-canary-7f3a")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", sa)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.43.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return sa


def _bearer(api) -> str:
    _, _, headers, _, _ = api.param_serialize("GET", "/", auth_settings=["BearerToken"])
    return {k.lower(): v for k, v in headers.items()}.get("authorization", "")


def test_in_a_pod_the_service_account_is_used(pod):
    api = api_client(None, "the-plans-context")  # a plan's context means nothing in a pod
    try:
        assert api.configuration.host == "https://10.43.0.1:443"
        assert api.configuration.ssl_ca_cert == str(pod / "ca.crt")
        assert _bearer(api).lower() == "bearer sa-token-canary-7f3a"
    finally:
        api.close()


def test_a_rotated_token_is_read_again(pod, monkeypatch):
    import datetime
    api = api_client()
    try:
        (pod / "token").write_text("rotated-token")
        # the loader re-reads the file once its copy is a minute old (the kubelet rotates the projected token)
        real = datetime.datetime

        class Later(real):
            @classmethod
            def now(cls, tz=None):
                return real.now(tz) + datetime.timedelta(minutes=2)
        monkeypatch.setattr(datetime, "datetime", Later)
        assert _bearer(api).lower() == "bearer rotated-token"
    finally:
        api.close()


def test_an_ipv6_service_host_is_bracketed(pod, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00:10:43::1")
    api = api_client()
    try:
        assert api.configuration.host == "https://[fd00:10:43::1]:443"
    finally:
        api.close()


def test_a_kubeconfig_still_comes_first(pod, tmp_path, monkeypatch):
    cfg = tmp_path / "kc"
    cfg.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "kubeconfig-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    api = api_client()
    try:
        assert api.configuration.host == "https://127.0.0.1:6443"
    finally:
        api.close()


def test_a_pod_without_its_token_says_what_to_mount(pod):
    (pod / "token").unlink()
    with pytest.raises(ClusterUnreachable) as e:
        api_client()
    msg = str(e.value)
    assert "\n" not in msg and "KUBERNETES_SERVICE_HOST" in msg and "automountServiceAccountToken" in msg
    assert str(pod) in msg and "--kubeconfig" in msg


def test_outside_a_pod_nothing_changes(pod, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(ClusterUnreachable, match="no kubeconfig: pass --kubeconfig FILE or set KUBECONFIG"):
        api_client()
