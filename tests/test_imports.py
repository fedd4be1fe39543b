"""The shape of the user space, read from the source (ast: nothing imported) and checked in
fresh interpreters, without root: imports at the top of each module, no import cycle, the
core never importing the servers but for the trace command, views knowing nothing of how
data is collected, and the commands other than trace loading no server module."""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from profiler import cli

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("profiler", "servers")
TRACE_WIRING = "profiler.commands.trace"  # the one core module that may import servers
COLLECTION = (
    "profiler.loader",
    "profiler.libbpf",
    "profiler.collector",
    "profiler.session",
    "profiler.kallsyms",
    "profiler.doctor",
    "profiler.checks",
    "profiler.receive",
    "profiler.tracefs",
)
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    """Every module of the packages, by dotted name."""
    return {
        module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))
    }


MODULES = sources()


def imported(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[str, ast.stmt]]:
    """(dotted name, statement) of everything a module imports; ``from X import y``
    names X.y when that is a module, else X."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                anchor = here[: len(here) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                name = f"{base}.{alias.name}"
                yield (name if name in MODULES else base), node


def parse(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


def graph() -> dict[str, set[str]]:
    """Module -> the modules of the packages it imports directly."""
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        found = imported(parse(module), module, path.name == "__init__.py")
        edges[module] = {name for name, _ in found if name in MODULES and name != module}
    return edges


GRAPH = graph()


def closure(module: str) -> set[str]:
    """Every module of the packages that importing module loads (parent packages aside)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in GRAPH[todo.pop()] - seen:
            seen.add(name)
            todo.append(name)
    return seen


def core(prefix: str = "profiler") -> list[str]:
    return [m for m in MODULES if m == prefix or m.startswith(prefix + ".")]


def test_the_walk_sees_the_modules_and_their_imports() -> None:
    """The checks below are only as good as the graph: it knows the known edges."""
    assert {"profiler.cli", "profiler.views.live", "servers.lab"} <= set(MODULES)
    assert "profiler.views.tables" in GRAPH["profiler.views.live"]
    assert "profiler.abi" in GRAPH["profiler.run"]  # `from profiler.abi import ...`
    assert "profiler.session" in GRAPH["profiler.commands.attach"]  # `from profiler import ...`
    assert "servers.lab" in GRAPH[TRACE_WIRING]


# The imports left until needed, each for attach's start (see AFTER_ATTACHING below).
DEFERRED = {
    "profiler.collector": {"numpy"},
    "profiler.run": {"numpy"},
    "profiler.commands.metrics": {"profiler.metrics"},
}


def type_checking_only(tree: ast.Module) -> set[int]:
    """The imports under ``if TYPE_CHECKING:`` at the top: names for the type checker,
    nothing run."""
    return {
        id(inner)
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in node.body
    }


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_import_is_at_the_top_of_its_module(module: str) -> None:
    tree = parse(module)
    top = {id(node) for node in tree.body} | type_checking_only(tree)
    late = [
        f"line {node.lineno}: {name}"
        for name, node in imported(tree, module, MODULES[module].name == "__init__.py")
        if id(node) not in top and name not in DEFERRED.get(module, set())
    ]
    assert not late, f"{module} imports inside a function or block: {late}"


def test_no_import_cycle() -> None:
    """Depth-first over the import graph of profiler/ and servers/: no back edge."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for name in sorted(GRAPH[module]):
            if state.get(name) == 1:
                cycle = path[path.index(name) :] + [name]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if name not in state:
                visit(name)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


@pytest.mark.parametrize("module", sorted(m for m in core() if m != TRACE_WIRING))
def test_the_core_never_imports_the_servers(module: str) -> None:
    """Servers may import the profiler, never the reverse: only the trace command wires the
    lab (servers/lab.py) in, and nothing in the core imports the trace command."""
    direct = {
        name
        for name, _ in imported(parse(module), module, MODULES[module].name == "__init__.py")
        if name == "servers" or name.startswith("servers.")
    }
    assert not direct, f"{module} imports {sorted(direct)}"
    assert TRACE_WIRING not in closure(module)
    assert not {m for m in closure(module) if m.startswith("servers")}


@pytest.mark.parametrize("module", sorted(core("profiler.views")))
def test_views_know_nothing_of_collection(module: str) -> None:
    loads = closure(module)
    assert not loads & set(COLLECTION), f"{module} loads {sorted(loads & set(COLLECTION))}"
    assert not {m for m in loads if m.startswith(("servers", "profiler.commands"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_views_draw(module: str) -> None:
    """rich is imported by the views alone (doctor's proofs and checks among the rest)."""
    names = {n for n, _ in imported(parse(module), module, MODULES[module].name == "__init__.py")}
    if not module.startswith("profiler.views"):
        assert not {n for n in names if n == "rich" or n.startswith("rich.")}, module


def loaded(packages: tuple[str, ...], *modules: str) -> list[str]:
    """The modules of packages a fresh interpreter has loaded after importing modules."""
    code = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {packages!r})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    found: list[str] = json.loads(proc.stdout)
    return found


def loaded_servers(*modules: str) -> list[str]:
    """The server modules a fresh interpreter has loaded after importing modules."""
    return loaded(("servers",), *modules)


@pytest.mark.parametrize("command", ["report", "compare", "export", "attach", "doctor"])
def test_commands_but_trace_load_no_server_module(command: str) -> None:
    assert loaded_servers("profiler.cli", f"profiler.commands.{command}") == []


# What attach never draws with, loaded by report and export alone: attach never
# imports them, where each would add to its start-up time and memory.
NOT_FOR_ATTACH = ("pandas", "matplotlib", "pyarrow")


def test_attach_loads_no_export_or_plotting_library() -> None:
    assert loaded(NOT_FOR_ATTACH, "profiler.cli", "profiler.commands.attach") == []


def test_report_loads_what_attach_does_not() -> None:
    """The check above can fail: report does load the plotting library."""
    assert "matplotlib" in loaded(NOT_FOR_ATTACH, "profiler.cli", "profiler.commands.report")


# What attach loads only once its probes are attached (numpy, to read the kernel's
# tables) or only with --metrics (prometheus_client): imported with the command, each
# delayed the probes (together ~0.15 s of a 0.55 s start, measured back to back).
AFTER_ATTACHING = ("numpy", "prometheus_client")


def test_attach_loads_numpy_and_prometheus_only_after_attaching() -> None:
    assert loaded(AFTER_ATTACHING, "profiler.cli", "profiler.commands.attach") == []


def test_the_metrics_module_loads_both() -> None:
    """The check above can fail: the endpoint's module loads both at its import."""
    assert {"numpy", "prometheus_client"} <= set(loaded(AFTER_ATTACHING, "profiler.metrics"))


def test_trace_loads_the_lab() -> None:
    """The check above can fail: the trace command does load the servers."""
    assert "servers.lab" in loaded_servers("profiler.cli", TRACE_WIRING)


def test_the_cli_dispatches_to_a_module_per_command() -> None:
    """Each subcommand's module exists and has run(args); cli imports none of them."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(cli.COMMANDS)
    for module in cli.COMMANDS.values():
        assert module in MODULES, module
        assert any(
            isinstance(node, ast.FunctionDef) and node.name == "run" for node in parse(module).body
        ), module
        assert module not in closure("profiler.cli")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines"
