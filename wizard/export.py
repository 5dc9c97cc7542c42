"""GitOps export: everything the wizard would apply, as files to commit instead (Flux, Argo CD).

``ghcr2gitea export --plan F --dir OUT`` writes, read-only against the cluster:
- one file per object every object stage would apply, named as ``kubectl get -o name`` names
  it (``OUT/<namespace>/deployment.apps_gitea-auth-proxy.yaml``), labels included;
- Secrets as TEMPLATES: their keys and structure, ``REPLACE-ME`` where a value goes, and an
  annotation saying how to fill them — no token, no private key ever leaves the wizard;
- each node's registries.yaml as ``OUT/nodes/<node>/registries.yaml.tmpl`` with
  ``"${GITEA_TOKEN}"`` where the token goes;
- the CI workflow as ``OUT/ci/build-image.yml.txt``;
- ``OUT/README.md`` saying what to fill, copy and apply.

Only Kubernetes objects end in .yaml, so ``kubectl apply --server-side -f OUT -R`` (and a Flux
or Argo CD directory source) picks up exactly the objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import registries as R
from . import workflow as W
from .cluster import label
from .credentials import Secret
from .manifests import write_atomic
from .ownership import owned
from .plan import Plan
from .script import render
from .stages.base import Context
from .stages.objects import ObjectStage, PlanPatch

PLACEHOLDER = "REPLACE-ME"
TOKEN_VAR = "${GITEA_TOKEN}"
FILL = "ghcr2gitea.io/fill"  # annotation: how to fill a template
OPERATORS = "ghcr2gitea.io/operators-object"  # annotation: an operator's object, only extended
OPERATORS_NOTE = ("yours, named by the plan: your fields are kept and only what the runner lacks is added; "
                  "a first server-side apply conflicts on them with your own field manager (see README.md)")
NODE_CA = "/etc/rancher/k3s/gitea-registry-ca.crt"
_SENTINEL = "ghcr2gitea-export-token-placeholder"


@dataclass(frozen=True)
class ExportFile:
    path: str  # relative to OUT
    text: str
    what: str  # what it is, for the summary


def object_path(obj: dict) -> str:
    """<namespace>/<kind>[.<group>]_<name>.yaml, like `kubectl get -o name` (deployment.apps/NAME)."""
    api = obj["apiVersion"]
    group = api.split("/", 1)[0] if "/" in api else ""
    kind = obj["kind"].lower() + (f".{group}" if group else "")
    md = obj["metadata"]
    return f"{md.get('namespace') or '_cluster'}/{kind}_{md['name']}.yaml"


# ------------------------------------------------------------------ secrets as templates
def docker_template(plan: Plan, hosts: list[str]) -> str:
    """A .dockerconfigjson with the hosts and user filled in and the token left to fill."""
    auths = {h: {"username": plan.username, "password": PLACEHOLDER} for h in hosts}
    return json.dumps({"auths": auths}, indent=2, sort_keys=True)


def secret_template(obj: dict, plan: Plan) -> dict:
    """The Secret with every value replaced: stringData placeholders plus a note on filling them."""
    md = obj["metadata"]
    ns, name = md.get("namespace", "default"), md["name"]
    typ = obj.get("type", "Opaque")
    keys = sorted(set(obj.get("data") or {}) | set(obj.get("stringData") or {}))
    if typ == "kubernetes.io/dockerconfigjson":
        hosts = sorted(_auth_hosts(obj))
        string_data = {".dockerconfigjson": docker_template(plan, hosts)}
        server = hosts[0] if hosts else plan.registry_host
        how = (f"Put the Gitea token of {plan.username} where it says {PLACEHOLDER}, or create it with: "
               + render("kubectl -n {ns} create secret docker-registry {name} --docker-username={user} "
                        "--docker-password=\"$GITEA_TOKEN\" --docker-server={server} --dry-run=client -o yaml",
                        ns=ns, name=name, user=plan.username, server=server)
               + " (one --docker-server per host: add the others to auths by hand).")
    elif typ == "kubernetes.io/tls":
        string_data = {k: PLACEHOLDER for k in keys}
        how = (f"The auth proxy's certificate for {plan.realm_hostname} and its key: copy them from the cluster "
               "(" + render("kubectl -n {ns} get secret {name} -o yaml", ns=ns, name=name) + ") or make a new pair ("
               + render("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days {days} "
                        "-subj {subj} -addext {san} -keyout tls.key -out tls.crt", days=plan.cert_days,
                        subj=f"/CN={plan.realm_hostname}", san=f"subjectAltName=DNS:{plan.realm_hostname}")
               + ") and put the same "
               f"tls.crt into ConfigMap {plan.proxy_ca_configmap} as ca.crt.")
    else:
        string_data = {k: PLACEHOLDER for k in keys}
        how = f"Fill every {PLACEHOLDER} value."
    how += " Never commit it filled in and unencrypted: use SOPS, Sealed Secrets or External Secrets."
    out = {"apiVersion": "v1", "kind": "Secret", "type": typ,
           "metadata": {"name": name, "namespace": ns, "labels": dict(md.get("labels") or {}),
                        "annotations": {**(md.get("annotations") or {}), FILL: how}},
           "stringData": string_data}
    return out


def _auth_hosts(obj: dict) -> list[str]:
    import base64
    raw = (obj.get("data") or {}).get(".dockerconfigjson")
    try:
        return list(json.loads(base64.b64decode(raw)).get("auths") or {}) if raw else []
    except ValueError:
        return []


# ------------------------------------------------------------------ the objects
def objects(ctx: Context, stages=None) -> list[tuple[ObjectStage, dict]]:
    """Every object the object stages would apply (labelled as the wizard labels them), Secrets templated."""
    if stages is None:
        from .stages import STAGES
        stages = STAGES
    p = ctx.plan
    out = []
    fresh_cert = False
    for st in stages:
        if not isinstance(st, ObjectStage):
            continue
        live = st.inspect(ctx).live
        named = st.named_by_plan(ctx)
        for obj in st.desired(ctx, live):
            key = f"{obj['kind']} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
            have = live.get(key)
            if key in named and have is not None and not owned(have):
                # the operator's object the plan names (the runner's Role): exported as the wizard leaves it —
                # its own fields kept, only what it lacks added, not labelled — never the wizard's whole object
                merge = next((c.payload.merge for c in st.additive(ctx, have, obj) if isinstance(c.payload, PlanPatch)),
                             None)
                if merge is not None:
                    out.append((st, {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                                     "metadata": {"name": obj["metadata"]["name"],
                                                  "namespace": obj["metadata"]["namespace"],
                                                  "annotations": {OPERATORS: OPERATORS_NOTE}}, **merge}))
                continue  # nothing it lacks (or a conflict, which plan reports): not exported
            obj = label(obj, st.key)
            if obj["kind"] == "Secret":
                if obj["metadata"]["name"] == p.proxy_tls_secret and obj.get("type") == "kubernetes.io/tls" and \
                        obj["metadata"].get("namespace") == p.proxy_namespace:  # not the Ingress's copy (node_tls: ca)
                    have = live.get(f"Secret {obj['metadata'].get('namespace')}/{obj['metadata']['name']}") or {}
                    fresh_cert = (have.get("data") or {}).get("tls.crt") != obj["data"].get("tls.crt")
                obj = secret_template(obj, p)
            out.append((st, obj))
    if fresh_cert:
        # The CA ConfigMap must hold the TLS Secret's certificate. A certificate the wizard just made would
        # travel without its key (Secrets are templates), matching nothing: leave it to fill, like the Secret.
        for _, obj in out:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == p.proxy_ca_configmap:
                obj["data"] = {"ca.crt": PLACEHOLDER}
                obj["metadata"].setdefault("annotations", {})[FILL] = (
                    f"Put the certificate (tls.crt) of Secret {p.proxy_tls_secret} here as ca.crt: Kaniko trusts "
                    "the auth proxy through it.")
    return out


def object_text(st: ObjectStage, obj: dict, plan_label: str) -> str:
    head = [f"# {obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}: exported by "
            f"ghcr2gitea from the plan {plan_label}", f"# (stage {st.title}, guide {st.guide_step})."]
    if OPERATORS in (obj["metadata"].get("annotations") or {}):
        head.append("# Not the wizard's object: its live fields, with only what the runner lacks added (not labelled).")
    if FILL in (obj["metadata"].get("annotations") or {}):
        head.append(f"# TEMPLATE: fill every {PLACEHOLDER} first (see the {FILL} annotation and README.md).")
    return "\n".join(head) + "\n" + yaml.dump(obj, Dumper=W.BlockDumper, sort_keys=False, width=110)


# ------------------------------------------------------------------ node files
def node_registries(plan: Plan, node: str, plan_label: str) -> str:
    """The plan's registries.yaml entries with the token as ${GITEA_TOKEN} (for envsubst)."""
    data = R.merge({}, plan, Secret(_SENTINEL))
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    body = body.replace(f"password: {_SENTINEL}", f'password: "{TOKEN_VAR}"')
    head = (f"# /etc/rancher/k3s/registries.yaml for node {node}: exported by ghcr2gitea from the plan {plan_label}.\n"
            "# It holds ONLY the plan's entries: merge them into the node's existing file (keep its other mirrors\n"
            "# and configs), fill the token with: GITEA_TOKEN=... envsubst < registries.yaml.tmpl, then restart\n"
            "# k3s (servers one at a time, then k3s-agent on agents): K3s reads this file only at start.\n")
    return head + body


def realm_ca(ctx: Context) -> str | None:
    cm = ctx.cluster.get("ConfigMap", ctx.plan.proxy_ca_configmap, ctx.plan.proxy_namespace)
    return ((cm or {}).get("data") or {}).get("ca.crt") or None


def node_ca_text(ctx: Context) -> str:
    """The nodes' CA bundle (registries.bundle_text: registry.ca_file and the realm's certificate, which containerd
    also checks with the registry host's TLS settings); registry.ca_file alone while the realm has none yet."""
    registry_ca = Path(ctx.plan.registry_ca_file).read_text()
    realm = realm_ca(ctx)
    return R.bundle_text(registry_ca, realm) if realm else registry_ca


def build(ctx: Context, plan_label: str, nodes: list[str]) -> list[ExportFile]:
    p = ctx.plan
    files = []
    for st, obj in objects(ctx):
        if p.vault_path and obj["kind"] == "Secret" and obj["metadata"]["name"] in (p.push_secret, p.pull_secret):
            continue  # External Secrets renders these from Vault (below)
        files.append(ExportFile(object_path(obj), object_text(st, obj, plan_label),
                                f"{obj['kind']} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
                                + (" (template)" if FILL in (obj["metadata"].get("annotations") or {}) else "")))
    for node in nodes:
        files.append(ExportFile(f"nodes/{node}/registries.yaml.tmpl", node_registries(p, node, plan_label),
                                f"node {node}: registries.yaml (template)"))
        if p.node_tls == "ca" and p.registry_ca_file:
            files.append(ExportFile(f"nodes/{node}/gitea-registry-ca.crt", node_ca_text(ctx),
                                    f"node {node}: {NODE_CA}" + ("" if realm_ca(ctx) else
                                                                  f" (add ca.crt of ConfigMap {p.proxy_ca_configmap} "
                                                                  "once the auth proxy exists)")))
    if p.vault_path:
        for obj in external_secrets(p):
            files.append(ExportFile(object_path(obj), yaml.safe_dump(obj, sort_keys=False),
                                    f"ExternalSecret {obj['metadata']['namespace']}/{obj['metadata']['name']} "
                                    f"(ESO, from Vault {p.vault_path})"))
    text = W.render(p, W.live_rollouts(ctx.cluster, p), plan_label)
    files.append(ExportFile("ci/build-image.yml.txt", text, f"CI workflow (copy to {p.workflow})"))
    files.append(ExportFile("README.md", readme(p, plan_label, files, nodes), "what to fill, copy and apply"))
    return files


ESO_STORE = "vault-backend"


def external_secrets(p: Plan) -> list[dict]:
    """External Secrets Operator objects that build both registry secrets from Vault (guide, Step 2 optional).

    Vault holds ``username`` and ``password`` at ``vault.path`` (``vault kv put <path> username=… password=…``);
    ESO renders the dockerconfigjson, so the token lives in Vault only.
    """
    def entry(host: str) -> str:
        return (f'"{host}": {{"username": "{{{{ .username }}}}", "password": "{{{{ .password }}}}", '
                f'"auth": "{{{{ printf "%s:%s" .username .password | b64enc }}}}"}}')

    out = []
    for name, hosts in ((p.push_secret, (p.internal_service, p.realm_host)), (p.pull_secret, (p.registry_host,))):
        config = '{"auths": {' + ", ".join(entry(h) for h in hosts) + "}}"
        out.append({
            "apiVersion": "external-secrets.io/v1beta1", "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": p.secrets_namespace,
                         "labels": {"app.kubernetes.io/managed-by": "ghcr2gitea", "ghcr2gitea.io/stage": "secrets"},
                         "annotations": {FILL: f"needs a ClusterSecretStore named {ESO_STORE} for Vault, and "
                                               "`" + render("vault kv put {path} {user} password=TOKEN", path=p.vault_path,
                                                            user=f"username={p.username}") + "`"}},
            "spec": {"refreshInterval": "1h",
                     "secretStoreRef": {"kind": "ClusterSecretStore", "name": ESO_STORE},
                     "target": {"name": name, "creationPolicy": "Owner", "template": {
                         "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": config}}},
                     "data": [{"secretKey": k, "remoteRef": {"key": p.vault_path, "property": k}}
                              for k in ("username", "password")]}})
    return out


def readme(p: Plan, plan_label: str, files: list[ExportFile], nodes: list[str]) -> str:
    templates = [f.path for f in files if f.what.endswith("(template)") and not f.path.startswith("nodes/")]
    objs = [f for f in files if f.path.endswith(".yaml")]
    lines = [
        "# ghcr2gitea export",
        "",
        f"Generated by `ghcr2gitea export` from the plan `{plan_label}`: every object the wizard would apply to",
        "the cluster, each node's registries.yaml and the CI workflow — to commit to a GitOps repository (Flux,",
        "Argo CD) instead of letting the wizard apply them. Nothing here holds a token or a private key.",
        "",
        "## Layout",
        "",
        "Only Kubernetes objects end in `.yaml`, so `kubectl apply -R` and directory sources pick up exactly them.",
        "",
        *[f"- `{f.path}` — {f.what}" for f in objs],
        *[f"- `nodes/{n}/registries.yaml.tmpl` — node {n}'s `/etc/rancher/k3s/registries.yaml`" for n in nodes],
        f"- `ci/build-image.yml.txt` — the Kaniko workflow: copy it to `{p.workflow}` in the application's "
        "repository",
        "",
        "## 1. Fill the Secret templates (before anything applies them)",
        "",
        f"These Secrets carry `{PLACEHOLDER}` where a value goes, and an annotation `{FILL}` saying how to fill it:",
        "",
        *[f"- `{t}`" for t in templates],
        "",
        f"Applied as they are, they would REPLACE working Secrets with `{PLACEHOLDER}`. Fill them and encrypt them",
        "(SOPS, Sealed Secrets) or replace them with External Secrets before committing. The registry secrets need",
        f"the Gitea token of `{p.username}`; the push secret needs it for BOTH hosts listed in it (Kaniko pushes to",
        f"`{p.internal_service}` and fetches its token from `{p.realm_host}`).",
        "",
        "## 2. Nodes: registries.yaml",
        "",
        "containerd runs on each node, outside the cluster, so this part cannot be applied with kubectl. On every",
        "node, merge the template into `/etc/rancher/k3s/registries.yaml` (keep the node's other entries), with the",
        "token filled in:",
        "",
        "```sh",
        "GITEA_TOKEN=... envsubst < registries.yaml.tmpl > registries.yaml   # then merge, mode 600",
        "```",
        "",
        "K3s reads the file only when it starts: restart `k3s` on servers one at a time (never two down), then",
        "`k3s-agent` on agents. `ghcr2gitea audit --plan PLAN --node-probes` proves each node loaded it.",
        "",
        "## 3. Apply or commit",
        "",
        "```sh",
        "kubectl apply --server-side -R -f .   # from this folder",
        "```",
        "",
        "or commit this folder to the path your Flux Kustomization or Argo CD Application watches. An object of",
        "yours that the plan names (the guide's runner Role) is exported as the wizard leaves it: its live fields",
        "with only what the runner lacks added, annotated `" + OPERATORS + "` and not labelled as the wizard's.",
        "Its first server-side apply conflicts with the field manager that wrote it: read the diff",
        "(`kubectl diff --server-side -R -f .`), then add `--force-conflicts` to that first apply. Nothing of",
        "yours is dropped: the exported fields are yours plus the additions.",
        "",
        *([f"With `vault.path` set, the two registry Secrets come from Vault through External Secrets "
           f"(`externalsecret.external-secrets.io_*.yaml`, ClusterSecretStore `{ESO_STORE}`): put the token there "
           "with `" + render("vault kv put {path} {user} password=TOKEN", path=p.vault_path,
                             user=f"username={p.username}") + "`.", ""] if p.vault_path else []),
        "Image references in the workloads' own manifests are not here: `ghcr2gitea rewrite --plan PLAN --write",
        "PATH...` changes them in place (comments and formatting kept).",
        "",
    ]
    return "\n".join(lines)


def write(out: Path, files: list[ExportFile]) -> None:
    """Every file under ``out``; each is checked first (no symlink out of ``out``, no read-only file), so a
    refusal writes nothing."""
    from .fsutil import check_write
    for f in files:
        check_write(out / f.path, within=out)
    for f in files:
        path = out / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, f.text.encode("utf-8"), mode=0o644, within=out)
