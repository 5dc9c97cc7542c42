"""The user documentation cannot drift from the code it describes.

- docs/troubleshooting.md is generated from wizard/diagnose.py (docs/gen.py);
- docs/plan.md documents every `section.key` of the plan schema with its real default, and
  its examples are what the plan loader really accepts and prints;
- every stage has its page, and the page names every check the stage can emit;
- usage.md and sandbox.md name every CLI flag, and sandbox.md carries the shell subset,
  the curl/wget flags and the /_sandbox/state keys of the code;
- every relative link in docs/ resolves, and docs/README.md links every page.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ghcr2gitea.cli import build_parser
from sandbox import curl as sandbox_curl
from sandbox import shell as sandbox_shell
from wizard import diagnose
from wizard import plan as plan_mod
from wizard.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
STAGE_SOURCES = ROOT / "wizard" / "stages"
EMITTERS = {"passed", "failed", "skipped", "Check"}  # their first argument is a check's name
PLACEHOLDER = r"[^`\n]+"  # what an f-string's {…} may stand for inside a `code span`


def read(name: str) -> str:
    return (DOCS / name).read_text()


def stage_page(index: int, key: str) -> Path:
    return DOCS / "stages" / f"{index:02d}-{key}.md"


# ------------------------------------------------------------------ troubleshooting
def test_troubleshooting_is_generated_from_the_diagnosis_catalogue():
    assert read("troubleshooting.md") == diagnose.render_markdown(), \
        "docs/troubleshooting.md is generated: run `python -m docs.gen`, do not edit it"


@pytest.mark.parametrize("argv", [["-m", "docs.gen", "--check"], ["docs/gen.py", "--check"]])
def test_gen_script_runs_both_ways_and_finds_nothing_stale(argv):
    res = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


# ------------------------------------------------------------------ plan.md
ROW = re.compile(r"^\|\s*`([a-z_]+)\.([a-z_]+)`\s*\|\s*([^|]*?)\s*\|", re.MULTILINE)


def documented_keys() -> dict[tuple[str, str], str]:
    return {(s, k): default for s, k, default in ROW.findall(read("plan.md"))}


def expected_default(attr: str) -> str:
    default = {f.name: f.default for f in dataclasses.fields(plan_mod.Plan)}[attr]
    if default == "":
        return "required"
    if default is None:
        return "none"
    if default == ():
        return "`[]`"
    if isinstance(default, bool):  # as the plan's YAML writes it
        return "`true`" if default else "`false`"
    return f"`{default}`"


def test_plan_doc_lists_every_schema_key_once_with_its_real_default():
    documented = documented_keys()
    schema = {(s, k): attr for s, keys in plan_mod.SCHEMA.items() for k, attr in keys.items()}
    missing = sorted(f"{s}.{k}" for s, k in set(schema) - set(documented))
    extra = sorted(f"{s}.{k}" for s, k in set(documented) - set(schema))
    assert not missing, f"docs/plan.md does not document: {missing}"
    assert not extra, f"docs/plan.md documents keys the schema does not have: {extra}"
    wrong = {f"{s}.{k}": (cell, expected_default(schema[(s, k)])) for (s, k), cell in documented.items()
             if not cell.startswith(expected_default(schema[(s, k)]))}
    assert not wrong, f"defaults in docs/plan.md differ from the Plan dataclass (doc, code): {wrong}"


def test_plan_doc_covers_the_top_level_keys_outside_the_schema():
    text = read("plan.md")
    for key in sorted(plan_mod.TOP_LEVEL - set(plan_mod.SCHEMA)):
        assert re.search(rf"^#+ `{key}`", text, re.MULTILINE), f"docs/plan.md has no section for `{key}`"


def marked_block(marker: str) -> str:
    m = re.search(rf"<!-- {marker} -->\n```[a-z]*\n(.*?)```", read("plan.md"), re.DOTALL)
    assert m, f"docs/plan.md has no fenced block after <!-- {marker} -->"
    return m.group(1)


def test_plan_doc_example_is_a_valid_plan_with_the_guides_hosts():
    plan = plan_mod.from_dict(yaml.safe_load(marked_block("example-plan")))
    assert plan.registry_host == "registry.bto.bar" and plan.realm_host == "gitea.k3s.bto.bar"
    assert plan.node_hosts == ("registry.bto.bar", "registry.k3s.bto.bar", "gitea.k3s.bto.bar")
    assert plan == dataclasses.replace(plan_mod.Plan(), root_url=plan.root_url, org=plan.org,
                                       registry_host=plan.registry_host, legacy_hosts=plan.legacy_hosts,
                                       images=plan.images), "the example claims every other key is at its default"


def test_plan_doc_error_example_is_what_the_loader_prints():
    with pytest.raises(plan_mod.PlanError) as e:
        plan_mod.from_dict(yaml.safe_load(marked_block("bad-plan")))
    shown = marked_block("bad-plan-errors").splitlines()
    assert [f"ghcr2gitea: {p}" for p in e.value.problems] == shown


# ------------------------------------------------------------------ stage pages
def _stage_module_defs() -> tuple[dict[str, ast.FunctionDef], dict[str, ast.ClassDef]]:
    funcs, classes = {}, {}
    for path in sorted(STAGE_SOURCES.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                funcs[node.name] = node
            elif isinstance(node, ast.ClassDef):
                classes[node.name] = node
    return funcs, classes


def _pattern(arg: ast.expr, assigned: dict[str, list[ast.expr]]) -> list[tuple[str, str]]:
    """(regex, readable form) of a check-name expression: a literal, an f-string, or a name bound to one."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [(re.escape(arg.value), arg.value)]
    if isinstance(arg, ast.JoinedStr):
        rx = "".join(re.escape(v.value) if isinstance(v, ast.Constant) else PLACEHOLDER for v in arg.values)
        text = "".join(v.value if isinstance(v, ast.Constant) else "{…}" for v in arg.values)
        return [(rx, text)]
    if isinstance(arg, ast.Name) and assigned.get(arg.id):
        return [p for value in assigned[arg.id] for p in _pattern(value, {})]
    raise AssertionError(f"cannot read a check name from {ast.unparse(arg)!r}: teach tests/test_docs.py")


def check_names(stage) -> list[tuple[str, str]]:
    """Every check name a stage can emit: its class (and base classes) and the stage-module functions it calls."""
    funcs, classes = _stage_module_defs()
    found: dict[str, str] = {}
    seen: set[str] = set()

    def visit(node: ast.AST) -> None:
        for fn in [n for n in ast.walk(node) if isinstance(n, ast.FunctionDef)]:
            assigned: dict[str, list[ast.expr]] = {}
            for a in ast.walk(fn):
                if isinstance(a, ast.Assign) and isinstance(a.value, (ast.Constant, ast.JoinedStr)):
                    for t in a.targets:
                        if isinstance(t, ast.Name):
                            assigned.setdefault(t.id, []).append(a.value)
            for call in [c for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)]:
                name = call.func.id
                if name in EMITTERS and call.args:
                    for rx, text in _pattern(call.args[0], assigned):
                        found[rx] = text
                elif name in funcs and name not in seen:
                    seen.add(name)
                    visit(funcs[name])

    def visit_class(name: str) -> None:
        cls = classes[name]
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                visit_class(base.id)
        visit(cls)

    visit_class(type(stage).__name__)
    return sorted(found.items(), key=lambda item: item[1])


def test_check_name_extraction_sees_literals_fstrings_and_helpers():
    by_key = {s.key: {text for _, text in check_names(s)} for s in STAGES}
    assert "cluster reachable" in by_key["preflight"]
    assert "{…} secret {…}/{…}" in by_key["secrets"]  # a name bound to an f-string
    assert "Gitea answers through the proxy" in by_key["proxy"]  # from a module-level helper
    assert "{…} {…}/{…} rolled out" in by_key["workloads"]  # a helper in another stage module
    assert "node facts read" in by_key["restart"]


@pytest.mark.parametrize("index,stage", list(enumerate(STAGES, 1)), ids=[s.key for s in STAGES])
def test_every_stage_has_a_page_that_names_each_of_its_checks(index, stage):
    page = stage_page(index, stage.key)
    assert page.is_file(), f"stage {stage.key} has no page {page.relative_to(ROOT)}"
    text = page.read_text()
    assert stage.title in text.splitlines()[0], f"{page.name}: the first line should name the stage {stage.title!r}"
    assert stage.guide_step in text, f"{page.name}: say which guide step it automates"
    missing = [name for rx, name in check_names(stage) if not re.search(f"`{rx}`", text)]
    assert not missing, f"{page.name} does not mention these checks (as `code`): {missing}"


def test_no_stray_stage_pages():
    expected = {stage_page(i, s.key).name for i, s in enumerate(STAGES, 1)}
    assert {p.name for p in (DOCS / "stages").glob("*.md")} == expected


# ------------------------------------------------------------------ flags
def subcommands() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_usage_names_every_command_and_flag():
    text = read("usage.md")
    for name, sub in subcommands().items():
        assert f"ghcr2gitea {name}" in text, f"usage.md does not show `ghcr2gitea {name}`"
        for action in sub._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    assert f"`{opt}" in text or f"{opt} " in text, f"usage.md does not mention {name} {opt}"


def test_sandbox_doc_names_every_sandbox_flag():
    text = read("sandbox.md")
    for action in subcommands()["sandbox"]._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt != "--help":
                assert f"`{opt}" in text, f"sandbox.md does not describe {opt}"


# ------------------------------------------------------------------ sandbox.md
def test_sandbox_doc_carries_the_shell_subset_verbatim():
    text = read("sandbox.md")
    assert sandbox_shell.SUPPORTED in text, "paste sandbox/shell.py's SUPPORTED text into sandbox.md"
    for builtin in sandbox_shell._BUILTINS:
        assert builtin in sandbox_shell.SUPPORTED, f"SUPPORTED does not list the builtin {builtin!r}"


def test_sandbox_doc_lists_every_curl_and_wget_flag():
    text = read("sandbox.md")
    for flag in [*sandbox_curl._CURL_FLAGS, *sandbox_curl._CURL_ARGS, *sandbox_curl._CURL_IGNORED]:
        shown = flag if flag.startswith("--") else f"-{flag}"
        assert f"`{shown}`" in text, f"sandbox.md does not list curl {shown}"
    for flag in ("-q", "-O", "-S", "-T", "-U", "--header", "--no-check-certificate", "--post-data"):
        assert f"`{flag}`" in text, f"sandbox.md does not list wget {flag}"


def test_sandbox_doc_names_every_state_key(sandbox, k8s):
    from kubernetes import client
    client.CoreV1Api(k8s).list_node()  # so that the state holds a request record
    state = sandbox.call(lambda: sandbox.cluster.state(sandbox.api.requests))
    keys = set(state) | set(next(iter(state["nodes"].values()))) | set(state["pods"][0]) | set(state["requests"][0])
    restart_keys = {"start", "end"}
    text = read("sandbox.md")
    missing = sorted(k for k in keys | restart_keys if f"`{k}`" not in text and f'"{k}"' not in text)
    assert not missing, f"sandbox.md does not describe these /_sandbox/state keys: {missing}"


# ------------------------------------------------------------------ links
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to hyphens."""
    out = set()
    in_fence = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"#+ (.*)", line)):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return out


def test_relative_links_and_anchors_resolve():
    broken = []
    for page in pages():
        text = page.read_text()
        for m in re.finditer(r"\]\(([^)\s]*)\)", text):
            target, _, anchor = m.group(1).partition("#")
            if "://" in target:
                continue
            dest = (page.parent / target).resolve() if target else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {m.group(1)}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)} -> {m.group(1)} (no such heading)")
    assert not broken, broken


def test_index_links_every_page():
    index = read("README.md")
    linked = {(DOCS / target).resolve() for target, _ in LINK.findall(index)}
    unlinked = [str(p.relative_to(DOCS)) for p in pages() if p.name != "README.md" and p.resolve() not in linked]
    assert not unlinked, f"docs/README.md does not link: {unlinked}"
