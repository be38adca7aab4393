"""dvc.yaml read as a graph of the project's own code: for each stage, the Python files its
command runs (the transitive closure of its imports, lazy ones inside functions included)
against the deps it declares. Used by tests/test_dvc_graph.py; runnable for a report:

    python tests/dvc_graph.py        # one line per stage: its closure, and any gap
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_FOLDERS = ("lifecycle/core",)  # listed whole by every stage, though none imports all of it
CODE = ("lifecycle", "stages", "serving", "tracking", "scripts")  # the project's own Python
_ENTRY = re.compile(r"(?:^|\s)python3?\s+(?:-m\s+(?P<module>[\w.]+)|(?P<script>[\w./-]+\.py))")


@dataclasses.dataclass
class Stage:
    name: str                      # as dvc shows it: evaluate@train for a foreach item
    cmd: str
    deps: list[str]                # as written in dvc.yaml, ``${...}`` resolved; params files left out
    outs: list[str]                # outs, metrics and plots: everything the stage declares it writes


@functools.cache
def stages(root: Path = ROOT) -> tuple[Stage, ...]:
    """Every stage of dvc.yaml as DVC itself reads it (foreach expanded, ``${...}`` resolved from params.yaml).
    Read once per folder (DVC builds its index in a second or two): write dvc.yaml before the first call."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(root), uninitialized=True) as repo:
        return tuple(Stage(stage.name, stage.cmd,
                           [dep.def_path for dep in stage.deps if not isinstance(dep, ParamsDependency)],
                           [out.def_path for out in stage.outs])
                     for stage in repo.index.stages if Path(stage.path) == Path(repo.root_dir) / "dvc.yaml")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    path = root.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _package_inits(name: str, root: Path) -> list[Path]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")
    inits = [module_file(".".join(parts[:i]), root) for i in range(1, len(parts))]
    return [p for p in inits if p is not None and p.name == "__init__.py"]


def imports_of(path: Path, root: Path = ROOT) -> set[Path]:
    """The project files that importing ``path`` runs directly: every import statement in it,
    at module level or inside a function, plus the packages those imports pass through."""
    package = path.relative_to(root).parent.parts
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]  # `from a import b` may be a module
        for name in names:
            target = module_file(name, root)
            if target is not None:
                found.add(target)
                found.update(_package_inits(name, root))
    return found


def entry_points(cmd: str, root: Path = ROOT) -> list[Path]:
    """The file the command runs, and the packages Python imports to reach it (``-m a.b``)."""
    match = _ENTRY.search(cmd)
    if not match:
        return []
    if match["module"]:
        target = module_file(match["module"], root)
        return [] if target is None else [target, *_package_inits(match["module"], root)]
    return [root / match["script"]]


def closure(start: list[Path], root: Path = ROOT) -> dict[Path, Path | None]:
    """Every project file reachable from ``start``, each with the file that imported it."""
    reached: dict[Path, Path | None] = {path: None for path in start}
    todo = list(start)
    while todo:
        current = todo.pop()
        for imported in imports_of(current, root):
            if imported not in reached:
                reached[imported] = current
                todo.append(imported)
    return reached


def chain(reached: dict[Path, Path | None], path: Path, root: Path = ROOT) -> str:
    links = []
    while path is not None:
        links.append(str(path.relative_to(root)))
        path = reached[path]
    return " <- ".join(links)


def inert(path: Path) -> bool:
    """A package ``__init__.py`` holding only its docstring: importing it cannot change a result."""
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def covered(path: Path, deps: list[str], root: Path = ROOT) -> bool:
    return any(path == (root / dep) or (root / dep) in path.parents for dep in deps)


def gaps(stage: Stage, root: Path = ROOT) -> list[str]:
    """What is wrong with the stage's deps, as sentences; empty when they tell the truth."""
    start = entry_points(stage.cmd, root)
    if not start:
        return [f"{stage.name}: cannot find the Python file that `{stage.cmd}` runs"]
    reached = closure(start, root)
    problems = [
        f"{stage.name}: runs {chain(reached, path, root)}, but its deps in dvc.yaml do not list "
        f"{path.relative_to(root)}"
        for path in sorted(reached)
        if not inert(path) and not covered(path, stage.deps, root)
    ]
    code = {path for path in reached if not inert(path)}
    for dep in stage.deps:
        target = root / dep
        if target.suffix == ".py" and target not in reached:  # a docstring-only __init__ it imports may be listed
            problems.append(f"{stage.name}: lists {dep}, which it never imports")
        elif target.is_dir() and dep not in SHARED_FOLDERS and target.relative_to(root).parts[0] in CODE:
            unused = sorted(p for p in target.rglob("*.py") if p not in code and not inert(p))
            if unused:
                problems.append(f"{stage.name}: lists the folder {dep}, but never imports "
                                f"{', '.join(str(p.relative_to(root)) for p in unused)}")
    own_script = start[0]
    for path in sorted(reached):
        relative = path.relative_to(root)
        if relative.parts[0] == "stages" and path != own_script and not inert(path):
            problems.append(f"{stage.name}: imports another stage, {chain(reached, path, root)}")
    return problems


def main() -> int:
    total = 0
    for stage in stages():
        problems = gaps(stage)
        total += len(problems)
        reached = sorted(str(p.relative_to(ROOT)) for p in closure(entry_points(stage.cmd)) if not inert(p))
        print(f"{stage.name}: {len(reached)} files: {', '.join(reached)}")
        for problem in problems:
            print(f"  GAP {problem}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
