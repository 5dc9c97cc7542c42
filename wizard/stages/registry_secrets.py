"""Stage Registry secrets [Step 2]: the pull and push Secrets (dockerconfigjson), and reading them back."""

from __future__ import annotations

import base64
import json

from .base import Check, Context, failed, passed
from .objects import ObjectStage


def dockerconfigjson(entries: dict[str, tuple[str, str]]) -> str:
    auths = {}
    for host, (user, password) in entries.items():
        auths[host] = {"username": user, "password": password,
                       "auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    return json.dumps({"auths": auths}, sort_keys=True)


def docker_secret(name: str, namespace: str, entries: dict[str, tuple[str, str]]) -> dict:
    data = base64.b64encode(dockerconfigjson(entries).encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": namespace}, "data": {".dockerconfigjson": data}}


def read_auths(secret: dict | None) -> dict[str, dict]:
    if not secret:
        return {}
    try:
        return json.loads(base64.b64decode(secret["data"][".dockerconfigjson"])).get("auths") or {}
    except (KeyError, ValueError):
        return {}


class RegistrySecrets(ObjectStage):
    key, title, guide_step = "secrets", "Registry secrets", "Step 2"
    description = ("Creates the push secret Kaniko mounts — with entries for BOTH the internal Gitea service it "
                   "pushes to and the realm host it fetches tokens from — and the pull secret pods use for the "
                   "external registry host.")

    def targets(self, ctx):
        p = ctx.plan
        return [("Secret", p.push_secret, p.secrets_namespace), ("Secret", p.pull_secret, p.secrets_namespace)]

    def desired(self, ctx, live):
        p, tok = ctx.plan, ctx.token.reveal()
        return [docker_secret(p.push_secret, p.secrets_namespace,
                              {p.internal_service: (p.username, tok), p.realm_host: (p.username, tok)}),
                docker_secret(p.pull_secret, p.secrets_namespace, {p.registry_host: (p.username, tok)})]

    def plan(self, ctx, observed):
        if ctx.token is None:
            return []
        return super().plan(ctx, observed)

    def verify(self, ctx: Context) -> list[Check]:
        p = ctx.plan
        checks = []
        for name, hosts, what in ((p.push_secret, (p.internal_service, p.realm_host), "push (Kaniko)"),
                                  (p.pull_secret, (p.registry_host,), "pull (imagePullSecrets)")):
            sec = ctx.cluster.get("Secret", name, p.secrets_namespace)
            check = f"{what} secret {p.secrets_namespace}/{name}"
            if sec is None:
                checks.append(failed(check, "the secret does not exist", "apply stage Registry secrets"))
                continue
            if sec.get("type") != "kubernetes.io/dockerconfigjson":
                checks.append(failed(check, f"type is {sec.get('type')}, not kubernetes.io/dockerconfigjson",
                                     "apply stage Registry secrets (it replaces the secret)"))
                continue
            auths = read_auths(sec)
            missing = [h for h in hosts if h not in auths]
            if missing:
                why = " (Kaniko fetches tokens from the realm host with these credentials)" \
                    if p.realm_host in missing else ""
                checks.append(failed(check, f"no entry for {', '.join(missing)}{why}", "apply stage Registry secrets",
                                     {"hosts": sorted(auths)}))
                continue
            stale = [h for h in hosts if ctx.token is not None and auths[h].get("password") != ctx.token.reveal()]
            wrong_user = [h for h in hosts if auths[h].get("username") != p.username]
            if wrong_user or stale:
                checks.append(failed(check, f"entries for {', '.join(wrong_user or stale)} hold another "
                                     f"{'user' if wrong_user else 'token'}", "apply stage Registry secrets",
                                     {"hosts": sorted(auths)}))
                continue
            checks.append(passed(check, {"hosts": sorted(auths)}))
        return checks
