"""Which package may import which: the engine (wizard/) imports neither the UI (screens/) nor the simulator
(sandbox/); the UI reaches the simulator only through the demo entry; the simulator never imports the UI; only
the application package (ghcr2gitea/, the composition root) sees all three. Read from the source (every import
statement, also those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file imports (relative imports resolved against its package)."""
    rel = path.relative_to(root).with_suffix("")
    package = list(rel.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base)
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    return found


def offenders(folder: str, banned: tuple[str, ...], allowed: tuple[str, ...] = (),
              root: Path = ROOT) -> dict[str, list[str]]:
    out = {}
    for path in sorted((root / folder).rglob("*.py")):
        name = str(path.relative_to(root))
        if name in allowed:
            continue
        bad = sorted(m for m in imports(path, root) if any(m == b or m.startswith(b + ".") for b in banned))
        if bad:
            out[name] = bad
    return out


def test_the_engine_never_imports_textual():
    assert offenders("wizard", ("textual", "rich")) == {}


def test_the_engine_never_imports_the_screens():
    assert offenders("wizard", ("screens",)) == {}


def test_the_engine_never_imports_the_simulator():
    assert offenders("wizard", ("sandbox",)) == {}


def test_the_simulator_never_imports_the_screens_or_the_application():
    assert offenders("sandbox", ("screens", "textual", "ghcr2gitea")) == {}


def test_the_screens_reach_the_simulator_only_through_the_demo_entry():
    assert offenders("screens", ("sandbox",), allowed=("screens/demo.py",)) == {}


def test_the_simulator_is_a_package_of_its_own():
    """The world is not inside the engine's package: wizard/sandbox is gone, sandbox/ is top-level."""
    assert not (ROOT / "wizard" / "sandbox").exists()
    assert (ROOT / "sandbox" / "__init__.py").is_file()


def test_the_checker_sees_an_import_inside_a_function(tmp_path):
    """The tests above cannot pass by missing imports: a lazy, relative import is found."""
    (tmp_path / "wizard" / "stages").mkdir(parents=True)
    probe = tmp_path / "wizard" / "stages" / "probe.py"
    probe.write_text("def f():\n    from ..cluster import Kind\n    import textual.app\n    import sandbox.server\n")
    assert imports(probe, tmp_path) >= {"wizard.cluster", "wizard.cluster.Kind", "textual.app", "sandbox.server"}
    assert offenders("wizard", ("textual",), root=tmp_path) == {"wizard/stages/probe.py": ["textual.app"]}


def test_one_module_per_stage():
    """Each stage has a module of its own under wizard/stages/, and no stage module holds a second stage."""
    import inspect

    from wizard.stages import STAGES
    from wizard.stages.base import Stage
    modules = [type(s).__module__ for s in STAGES]
    assert len(set(modules)) == len(STAGES), modules
    for name in modules:
        mod = __import__(name, fromlist=["_"])
        own = [c for _, c in inspect.getmembers(mod, inspect.isclass)
               if issubclass(c, Stage) and c.__module__ == name and getattr(c, "key", None)]
        assert len(own) == 1, (name, own)


def test_the_auth_flow_is_model_probes_and_verdicts_and_only_the_probes_touch_the_network():
    folder = ROOT / "wizard" / "authflow"
    assert sorted(p.name for p in folder.glob("*.py")) == ["__init__.py", "flow.py", "probes.py", "verdicts.py"]
    net = ("httpx", "wizard.netclient", "wizard.tlsinfo", "socket", "ssl")
    for pure in ("flow.py", "verdicts.py"):
        found = imports(folder / pure)
        assert not [m for m in found if any(m == b or m.startswith(b + ".") for b in net)], pure
        assert "wizard.authflow.probes" not in found, pure  # the model and the verdicts never call the probes
