"""The CI workflow of the guide's Step 7, generated for the plan's images.

``.github/workflows/build-image.yml``: a change-detection job, one Kaniko build job per image
and a deploy job that restarts the workloads running the rebuilt images. Kaniko runs as a pod
in the cluster (the runner is self-hosted) and pushes to Gitea's INTERNAL service over plain
HTTP (``--insecure-registry``); the token realm, which no Kaniko flag affects, is reached over
HTTPS through the auth proxy: ``hostAliases`` maps the realm host to the proxy's ClusterIP
(looked up at run time) and an init container merges the proxy's CA into the bundle
``SSL_CERT_FILE`` names. The runner's RBAC for all this is Step 8 (stage "CI and RBAC").
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from . import script as S
from .authflow import CA_BUNDLE, ca_bundle_script
from .manifests import plan_image
from .plan import Image, Plan
from .yamlsafe import BlockDumper

KANIKO_IMAGE = "gcr.io/kaniko-project/executor:latest"
RESTARTABLE = ("StatefulSet", "Deployment")  # what the runner's Role may patch (rollout restart)
SCHEMA = "builtin_schemas/vendor/github-workflows.json"  # shipped inside check-jsonschema


@dataclass(frozen=True, order=True)
class Rollout:
    """A workload the deploy job restarts after its image was rebuilt."""

    kind: str
    name: str


def job_id(img: Image, taken: set[str] | None = None) -> str:
    """A GitHub job/output id for the image: its name, lowercased, [a-z0-9_-] only."""
    base = re.sub(r"[^a-z0-9_-]+", "-", img.name.lower()).strip("-") or "image"
    if not re.match(r"[a-z_]", base):
        base = "img-" + base
    out, n = base, 2
    while taken is not None and out in taken:
        out, n = f"{base}-{n}", n + 1
    if taken is not None:
        taken.add(out)
    return out


def job_ids(plan: Plan) -> dict[Image, str]:
    taken: set[str] = set()
    return {img: job_id(img, taken) for img in plan.images}


def pod_name(jid: str, run_id: str) -> str:
    return f"kaniko-{jid[:40].rstrip('-_').replace('_', '-')}-{run_id}"


def change_patterns(img: Image) -> list[str]:
    """Shell patterns of the repository paths whose change rebuilds the image."""
    if img.paths:
        return list(img.paths)
    ctx = (img.context or ".").strip("/")
    if ctx in ("", "."):
        return ["*"]  # the whole repository is the build context
    dockerfile = img.dockerfile if "/" in img.dockerfile else f"{ctx}/{img.dockerfile}"
    return list(dict.fromkeys([f"{ctx}/*", dockerfile]))


def kaniko_pod(plan: Plan, img: Image, *, name: str, proxy_ip: str, sha_short: str, timestamp: str,
               git_context: str, dest: str) -> dict:
    """The Kaniko build pod of the guide's Step 7 (values may be GitHub expressions)."""
    args = [f"--dockerfile={img.dockerfile}", f"--context={git_context}"]
    ctx = (img.context or ".").strip("/")
    if ctx not in ("", "."):
        args.append(f"--context-sub-path={ctx}")
    args += [f"--destination={dest}:latest", f"--destination={dest}:{sha_short}",
             f"--destination={dest}:{timestamp}", "--cache=true", f"--cache-repo={dest}/cache",
             f"--insecure-registry={plan.internal_service}"]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": plan.runner_namespace,
                     "labels": {"app.kubernetes.io/name": "kaniko", "app.kubernetes.io/component": "image-build",
                                "app.kubernetes.io/managed-by": "github-actions"}},
        "spec": {
            "restartPolicy": "Never",
            # the realm host resolves to the auth proxy: Kaniko fetches its token there over HTTPS
            "hostAliases": [{"ip": proxy_ip, "hostnames": [plan.realm_hostname]}],
            "initContainers": [{
                "name": "setup-certs", "image": plan.helper_image,
                "command": ["sh", "-c", ca_bundle_script()],
                "volumeMounts": [{"name": "merged-certs", "mountPath": "/certs"},
                                 {"name": "custom-ca", "mountPath": "/custom-ca"}]}],
            "containers": [{
                "name": "kaniko", "image": KANIKO_IMAGE,
                "env": [{"name": "SSL_CERT_FILE", "value": CA_BUNDLE}],
                "args": args,
                "volumeMounts": [{"name": "docker-config", "mountPath": "/kaniko/.docker"},
                                 {"name": "merged-certs", "mountPath": "/certs"}]}],
            "volumes": [
                {"name": "docker-config", "secret": {"secretName": plan.push_secret, "items": [
                    {"key": ".dockerconfigjson", "path": "config.json"}]}},
                {"name": "custom-ca", "configMap": {"name": plan.proxy_ca_configmap}},
                {"name": "merged-certs", "emptyDir": {}}]},
    }


# ------------------------------------------------------------------ the workflow
def header(plan_label: str) -> str:
    return (f"# Generated by ghcr2gitea from the plan {plan_label}.\n"
            "# Do not edit by hand: change the plan and generate it again (ghcr2gitea apply, stage\n"
            "# \"CI and RBAC\", or ghcr2gitea export). Kaniko builds in the cluster and pushes to Gitea's\n"
            "# internal service; the token realm is reached through the TLS auth proxy (guide, Step 7).\n")


def render(plan: Plan, rollouts: dict[str, list[Rollout]] | None = None, plan_label: str | None = None) -> str:
    """The workflow file's text. rollouts: image target → workloads to restart once it is rebuilt."""
    rollouts = rollouts or {}
    ids = job_ids(plan)
    wf: dict = {
        "name": "Build images",
        "on": {"push": {"branches": [plan.ci_branch]},
               "workflow_dispatch": {"inputs": {"images": {
                   "description": "images to build: all, or a comma-separated list of "
                                  + ", ".join(ids.values()),
                   "required": False, "default": "all", "type": "string"}}}},
        "permissions": {"contents": "read"},
        "concurrency": {"group": "build-images-${{ github.ref }}", "cancel-in-progress": False},
        "env": {"REGISTRY": plan.internal_service, "ORG": plan.org},
        "jobs": {"changes": _changes_job(plan, ids)},
    }
    for img, jid in ids.items():
        wf["jobs"][f"build-{jid}"] = _build_job(plan, img, jid)
    deploy = _deploy_job(plan, ids, rollouts)
    if deploy:
        wf["jobs"]["deploy"] = deploy
    body = yaml.dump(wf, Dumper=BlockDumper, sort_keys=False, width=4096, default_flow_style=False)
    body = body.replace("\n'on':\n", "\non:\n", 1)  # YAML 1.1 would read a bare on as true; GitHub reads 1.2
    return header(plan_label or plan.source_path or "(unsaved plan)") + body


def _changes_job(plan: Plan, ids: dict[Image, str]) -> dict:
    lines = [
        "set -euo pipefail",
        "CHANGED=\"\"",
        "ALL=false",
        "if [ \"$EVENT\" != workflow_dispatch ]; then",
        "  if [ -z \"$BEFORE\" ] || [ \"$BEFORE\" = 0000000000000000000000000000000000000000 ] || \\",
        "     ! git cat-file -e \"$BEFORE^{commit}\" 2>/dev/null; then",
        "    ALL=true  # a new branch or a rewritten history: build everything",
        "  else",
        "    CHANGED=$(git diff --name-only \"$BEFORE\" \"$GITHUB_SHA\")",
        "  fi",
        "fi",
        "# wanted ID PATTERN...: requested by hand, or a changed file matches one of the patterns",
        "wanted() {",
        "  local id=$1; shift",
        "  if [ \"$EVENT\" = workflow_dispatch ]; then",
        "    case \",${REQUESTED// /},\" in *,all,*|*,\"$id\",*) echo true ;; *) echo false ;; esac",
        "    return",
        "  fi",
        "  if [ \"$ALL\" = true ]; then echo true; return; fi",
        "  local f p",
        "  while IFS= read -r f; do",
        "    [ -n \"$f\" ] || continue",
        "    for p in \"$@\"; do",
        "      # shellcheck disable=SC2254",
        "      case \"$f\" in $p) echo true; return ;; esac",
        "    done",
        "  done <<< \"$CHANGED\"",
        "  echo false",
        "}",
    ]
    for img, jid in ids.items():
        pats = change_patterns(img)
        fields = " ".join(f"{{p{i}}}" for i in range(len(pats)))
        lines.append(S.render("printf '%s=%s\\n' {jid} \"$(wanted {jid} " + fields + ")\" >> \"$GITHUB_OUTPUT\"",
                            jid=jid, **{f"p{i}": p for i, p in enumerate(pats)}))
    return {
        "runs-on": "self-hosted",
        "outputs": {jid: f"${{{{ steps.filter.outputs.{jid} }}}}" for jid in ids.values()},
        "steps": [
            {"name": "Checkout", "uses": "actions/checkout@v4", "with": {"fetch-depth": 0}},
            {"name": "Detect changed images", "id": "filter", "shell": "bash",
             "env": {"EVENT": "${{ github.event_name }}", "REQUESTED": "${{ inputs.images }}",
                     "BEFORE": "${{ github.event.before }}"},
             "run": "\n".join(lines) + "\n"}],
    }


# What the build step takes from GitHub and the metadata step, as environment variables: a GitHub
# expression pasted into a script is code (a branch may be named `$(…)`), an env value is data.
BUILD_ENV = {
    "PROXY_IP": "${{ steps.meta.outputs.proxy_ip }}",
    "SHA_SHORT": "${{ steps.meta.outputs.sha_short }}",
    "TIMESTAMP": "${{ steps.meta.outputs.timestamp }}",
    "GIT_REPOSITORY": "${{ github.repository }}",
    "GIT_REF": "${{ github.ref }}",
    "GIT_SHA": "${{ github.sha }}",
    "RUN_ID": "${{ github.run_id }}",
}
_SAFE_VALUE = "A-Za-z0-9._/:-"  # what those values may hold before they go into the pod spec


def _heredoc_text(text: str, placeholders: dict[str, str]) -> str:
    """``text`` for an unquoted here-document: ``\\``, ``$`` and backticks escaped, so nothing in it expands,
    then each placeholder replaced by its ``${VAR}`` (the only expansions, and their values are not re-read)."""
    out = text.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")
    for token, var in placeholders.items():
        out = out.replace(token, "${" + var + "}")
    return out


def _build_job(plan: Plan, img: Image, jid: str) -> dict:
    pod = pod_name(jid, "${{ github.run_id }}")
    ns = plan.runner_namespace
    marks = {name: f"@@GHCR2GITEA_{name}@@" for name in ("PROXY_IP", "SHA_SHORT", "TIMESTAMP", "GIT_REPOSITORY",
                                                         "GIT_REF", "GIT_SHA", "DEST", "RUN_ID")}
    spec = kaniko_pod(plan, img, name=pod_name(jid, marks["RUN_ID"]), proxy_ip=marks["PROXY_IP"],
                      sha_short=marks["SHA_SHORT"], timestamp=marks["TIMESTAMP"],
                      git_context=f"git://github.com/{marks['GIT_REPOSITORY']}.git#{marks['GIT_REF']}#"
                                  f"{marks['GIT_SHA']}",
                      dest=marks["DEST"])
    pod_yaml = yaml.dump(spec, Dumper=BlockDumper, sort_keys=False, width=4096, default_flow_style=False)
    checks = [S.render("case \"${{" + name + "}}\" in ''|*[!" + _SAFE_VALUE + "]*) printf '::error::%s is empty "
                       "or holds characters a pod spec cannot take: %s\\n' {name} \"${{" + name + "}}\"; exit 1 ;; esac",
                       name=name)
              for name in BUILD_ENV]
    build = "\n".join([
        "set -euo pipefail",
        *checks,
        'DEST="${REGISTRY}/${IMAGE}"',
        "cat <<EOF | kubectl apply -f -",
        _heredoc_text(pod_yaml.rstrip("\n"), {t: v for v, t in marks.items()}),
        "EOF",
    ]) + "\n"
    k = f"kubectl -n {S.quote(ns)}"  # every kubectl line below names the namespace, quoted
    wait = "\n".join([
        "set -uo pipefail",
        S.render("POD={pod}", pod=pod),
        f"{k} wait --for=condition=Ready pod/\"$POD\" --timeout=120s 2>/dev/null || true",
        "while true; do",
        f"  STATUS=$({k} get pod \"$POD\" -o jsonpath='{{.status.phase}}')",
        "  echo \"Build status: $STATUS\"",
        "  if [ \"$STATUS\" = Succeeded ]; then break; fi",
        f"  WAITING=$({k} get pod \"$POD\" -o jsonpath='{{.status.initContainerStatuses[*].state.waiting."
        "reason} {.status.containerStatuses[*].state.waiting.reason}')",
        "  case \"$STATUS $WAITING\" in",
        "    Failed*|*ErrImagePull*|*ImagePullBackOff*|*CreateContainerConfigError*|*InvalidImageName*)",
        f"      {k} describe pod \"$POD\" | tail -n 20",
        f"      {k} logs \"$POD\" --all-containers 2>/dev/null || true",
        "      echo \"::error::the Kaniko build pod failed ($STATUS $WAITING)\"",
        "      exit 1 ;;",
        "  esac",
        "  sleep 10",
        "done",
    ]) + "\n"
    meta = S.Script()
    meta.add("set -euo pipefail")
    meta.add("echo \"sha_short=$(git rev-parse --short HEAD)\" >> \"$GITHUB_OUTPUT\"")
    meta.add("echo \"timestamp=$(date +%Y%m%d-%H%M%S)\" >> \"$GITHUB_OUTPUT\"")
    meta.add("# the auth proxy's ClusterIP: Kaniko reaches the realm host through it (hostAliases)")
    meta.add("PROXY_IP=$(kubectl -n {ns} get svc {name} -o jsonpath='{{.spec.clusterIP}}')",
             ns=plan.proxy_namespace, name=plan.proxy_name)
    meta.add("[ -n \"$PROXY_IP\" ] || {{ printf '::error::service %s/%s has no ClusterIP (is the auth proxy "
             "deployed?)\\n' {ns} {name}; exit 1; }}", ns=plan.proxy_namespace, name=plan.proxy_name)
    meta.add("echo \"proxy_ip=${{PROXY_IP}}\" >> \"$GITHUB_OUTPUT\"")
    return {
        "needs": "changes",
        "if": f"needs.changes.outputs.{jid} == 'true'",
        "runs-on": "self-hosted",
        "timeout-minutes": 60,
        "env": {"IMAGE": img.target_repo},
        "steps": [
            {"name": "Checkout", "uses": "actions/checkout@v4"},
            {"name": "Get metadata", "id": "meta", "shell": "bash", "run": meta.text()},
            {"name": "Build image", "shell": "bash", "env": dict(BUILD_ENV), "run": build},
            {"name": "Wait for build", "shell": "bash", "run": wait},
            {"name": "Show build logs", "if": "always()", "shell": "bash",
             "run": S.render("kubectl -n {ns} logs {pod} --all-containers 2>/dev/null || true\n", ns=ns, pod=pod)},
            {"name": "Cleanup", "if": "always()", "shell": "bash",
             "run": S.render("kubectl -n {ns} delete pod {pod} --ignore-not-found\n", ns=ns, pod=pod)},
        ],
    }


def _deploy_job(plan: Plan, ids: dict[Image, str], rollouts: dict[str, list[Rollout]]) -> dict | None:
    lines = ["set -euo pipefail"]
    any_restart = False
    for img, jid in ids.items():
        todo = sorted(r for r in rollouts.get(img.target, []) if r.kind in RESTARTABLE)
        lines.append(f"# {img.target}")
        if not todo:
            lines.append(f"# (no Deployment or StatefulSet in {plan.workloads_namespace} runs it: nothing to restart)")
            continue
        any_restart = True
        lines.append(f"if [ \"${{{{ needs.changes.outputs.{jid} }}}}\" = \"true\" ] && "
                     f"[ \"${{{{ needs.build-{jid}.result }}}}\" = \"success\" ]; then")
        for r in todo:  # workload names come from the cluster: quoted like any value
            ref = f"{r.kind.lower()}/{r.name}"
            lines.append(S.render("  kubectl -n {ns} rollout restart {ref}", ns=plan.workloads_namespace, ref=ref))
            lines.append(S.render("  kubectl -n {ns} rollout status {ref} --timeout=300s", ns=plan.workloads_namespace,
                                ref=ref))
        lines.append("fi")
    if not any_restart:
        return None
    return {
        "needs": ["changes", *(f"build-{jid}" for jid in ids.values())],
        "if": "always() && !failure() && !cancelled()",
        "runs-on": "self-hosted",
        "steps": [{"name": "Restart updated workloads", "shell": "bash", "run": "\n".join(lines) + "\n"}],
    }


# ------------------------------------------------------------------ inputs from the cluster
def live_rollouts(cluster, plan: Plan) -> dict[str, list[Rollout]]:
    """Deployments and StatefulSets in the workloads namespace running a plan image (GHCR or Gitea form)."""
    out: dict[str, list[Rollout]] = {}
    targets = {img.target: img for img in plan.images}
    for kind in RESTARTABLE:
        for obj in cluster.list(kind, plan.workloads_namespace):
            spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
            for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                image = c.get("image", "")
                img = plan_image(image, plan) or next(
                    (targets[t] for t in targets if image == t or image.startswith((t + ":", t + "@"))), None)
                if img is not None:
                    r = Rollout(kind, obj["metadata"]["name"])
                    if r not in out.setdefault(img.target, []):
                        out[img.target].append(r)
    return out


def plan_label(plan: Plan, base: Path | None = None) -> str:
    """How a generated file names its plan: relative to base (the repository it lands in), so the file does not
    change with the machine that generated it; absolute without a base."""
    if not plan.source_path:
        return "(unsaved plan)"
    p = Path(plan.source_path).resolve()
    if base is not None:
        try:
            return os.path.relpath(p, Path(base).resolve())
        except ValueError:  # another drive
            pass
    return str(p)


def workflow_path(plan: Plan) -> Path | None:
    """Where the stage writes the workflow: ci.workflow inside ci.repo_dir; None when no repo_dir is set."""
    if not plan.ci_repo_dir:
        return None
    from .manifests import resolve
    return resolve(plan, plan.ci_repo_dir) / plan.workflow


# ------------------------------------------------------------------ validation
class SchemaUnavailable(Exception):
    """check-jsonschema (which ships the GitHub workflow schema) is not installed."""


def load(text: str):
    """Parse as GitHub does (YAML 1.2 booleans: `on` is a key, not true)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


class _Yaml12Loader(yaml.SafeLoader):
    pass


_Yaml12Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:bool"]
                                         for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def schema() -> dict:
    try:
        ref = resources.files("check_jsonschema").joinpath(SCHEMA)
    except ModuleNotFoundError:
        raise SchemaUnavailable("install check-jsonschema (pip install check-jsonschema) to validate workflows") \
            from None
    return json.loads(ref.read_text(encoding="utf-8"))


def schema_problems(text: str) -> list[str]:
    """Every violation of the GitHub Actions workflow schema (offline), as 'path: message'."""
    import jsonschema
    data = load(text)
    validator = jsonschema.Draft7Validator(schema())
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))]


