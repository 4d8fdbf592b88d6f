"""The layering docs/design.md promises, read from the source: the core library imports neither
the analysis and benchmark packages nor configs/, and no module imports itself in a circle."""
import ast
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "lstm"
TOOLS = ("lstm.analysis", "lstm.bench")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def imports() -> dict[str, set[str]]:
    """Every lstm module's imports of lstm modules and configs, at any depth of the file
    (the scripts' and the library's lazy imports inside functions count too)."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                # `from lstm import train` imports the module lstm.train
                found |= {f"{node.module}.{a.name}" for a in node.names} & modules
        graph[module_name(path)] = {name for name in found
                                    if name.startswith(("lstm", "configs")) and name != "lstm"}
    return graph


def is_core(name: str) -> bool:
    return not name.startswith(TOOLS)


def violations() -> dict[str, list[str]]:
    """Core modules and the tools or configs they import."""
    offending = {module: sorted(n for n in names if not is_core(n) or n.startswith("configs"))
                 for module, names in imports().items() if is_core(module)}
    return {module: names for module, names in offending.items() if names}


def test_the_core_imports_no_tools_and_no_configs():
    assert violations() == {}


def test_no_import_circles():
    graph = imports()

    def visit(module, path):
        for target in sorted(graph.get(module, ())):
            assert target not in path, f"import circle: {' -> '.join(path[path.index(target):] + [target])}"
            visit(target, path + [target])

    for module in sorted(graph):
        visit(module, [module])


def test_the_checker_sees_a_planted_violation(tmp_path, monkeypatch):
    """Guards the test itself: a core module importing lstm.analysis must be reported."""
    fake = tmp_path / "lstm"
    (fake / "analysis").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "analysis" / "__init__.py").write_text("")
    (fake / "analysis" / "viz.py").write_text("")
    (fake / "train.py").write_text("def f():\n    from lstm.analysis import viz\n")
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "ROOT", tmp_path)
    monkeypatch.setattr(this, "PACKAGE", fake)
    assert violations() == {"lstm.train": ["lstm.analysis", "lstm.analysis.viz"]}
