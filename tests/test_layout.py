"""The package's layout: no module imports one that imports it back, and the pipeline is the
course's list, each stage's body living in the module it names."""

from __future__ import annotations

import ast
from pathlib import Path

import diffchat

PACKAGE = Path(diffchat.__file__).resolve().parent


def import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports, from every import statement (lazy ones too)."""
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                # A package's modules may use their own __init__; the package root is not a module.
                if target and target not in (name, "diffchat") and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert len(graph) > 20
    assert cycles(graph) == []


def test_each_stage_lives_in_the_module_it_names():
    from diffchat.pipeline import COURSE

    assert list(COURSE.stages) == ["data", "base", "pb", "instructpe", "sft", "clip", "rewards",
                                   "ppo", "ppo_no_pi_plus", "ppo_no_pi_minus", "ppo_no_vci", "ppo_no_ci_reward",
                                   "eval"]
    for stage in COURSE.stages.values():
        body = stage.body()
        assert body.__module__ == stage.module
        assert callable(body) and stage.description


SHAPE = ("**What you will learn**", "**Paper sections**", "**Runtime**", "The paper reports / you got", "## Exercises")


def test_every_notebook_has_the_course_shape():
    """Header (what you learn, paper sections, runtime), "paper reports / you got", exercises, in
    that order, and the solutions file the exercises name."""
    import nbformat

    from diffchat.course import list_notebooks

    for path in list_notebooks():
        text = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells
                         if cell.cell_type == "markdown")
        places = [text.find(mark) for mark in SHAPE]
        missing = [mark for mark, at in zip(SHAPE, places) if at < 0]
        assert not missing, f"{path.name} lacks {missing}"
        assert places == sorted(places), f"{path.name}: the parts are out of order: {dict(zip(SHAPE, places))}"
        assert (path.parent / "solutions" / f"{path.stem}.py").is_file(), f"{path.name} has no solutions file"
