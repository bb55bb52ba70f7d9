"""The package's shape is a tested contract: layers as ARCHITECTURE.md draws them, no import cycles, bench
imports at module top, and a fast ``bench --help`` (no heavy library imported to parse flags)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
# Heavy third-party packages a module may import inside a function, so `bench --help` stays fast.
HEAVY = (
    "onnxruntime",
    "onnx",
    "onnxconverter_common",
    "onnx_ir",
    "matplotlib",
    "adjustText",  # report plots' labels (imports matplotlib)
    "markdown_it",  # report --html (rich's Markdown parser)
    "pandas",
    "scipy",
    "sklearn",
    "torch",
    "transformers",
    "ray",
    "pydantic",
    "pydantic_core",  # pydantic's engine (results.py builds a core schema with it)
    "uvicorn",
    "fastapi",
    "aiohttp",
    "PIL",
    "rich",
    "psutil",
    "pynvml",
    "numpy",
    "prometheus_client",
    "multipart",
    "tomli",
)  # tomli: the Python 3.10 fallback of tomllib


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each one an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_layers_contract_holds() -> None:
    """import-linter with the contract in pyproject.toml (the same check `nox -s lint` runs)."""
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe), "--no-cache"], capture_output=True, text=True, cwd=BENCH.parent, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_no_import_cycles_between_modules() -> None:
    graph = grimp.build_graph("bench", cache_dir=None)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert _strongly_connected(edges) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _local_imports(path: Path) -> list[str]:
    """``module:line name`` for each import inside a function body."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                found += [(node.lineno, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.append((node.lineno, node.module))
    return [f"{path.relative_to(BENCH.parent)}:{line} {name}" for line, name in found]


def test_bench_modules_are_imported_at_module_top() -> None:
    """Function-local imports are only for heavy third-party packages (and the service's FastAPI app); the
    command modules of bench/cli import the library when their command runs, so no --help loads it."""
    # FastAPI/uvicorn, and numpy: the results contract loads bench.stats only to compute an interval
    allowed_bench = {"bench.service.app", "bench.service.server", "bench.stats"}
    offenders = []
    for path in sorted(BENCH.rglob("*.py")):
        lazy_cli = path.parent == BENCH / "cli"
        for entry in _local_imports(path):
            name = entry.split(" ", 1)[1]
            root = name.split(".")[0]
            own = root == "bench" and name not in allowed_bench and not lazy_cli
            light = root != "bench" and root not in HEAVY and root not in sys.stdlib_module_names
            if own or light:
                offenders.append(entry)
    assert offenders == []


@pytest.mark.parametrize(
    ("argv", "forbidden"),
    [
        (["--help"], ("bench.cli.measuring", "bench.cli.release", "bench.cli.gate", "bench.console", "numpy")),
        (["run", "--help"], ("numpy", "onnxruntime")),
    ],
)
def test_help_imports_no_heavy_library(argv: list[str], forbidden: tuple[str, ...]) -> None:
    """`bench --help` loads no command module; `bench run --help` builds its options without numpy or ORT."""
    heavy = (
        "onnxruntime",
        "onnx",
        "matplotlib",
        "pandas",
        "scipy",
        "sklearn",
        "torch",
        "pydantic",
        "fastapi",
        "aiohttp",
    )
    code = (
        "import sys; from click.testing import CliRunner; from bench.cli import main as cli; "
        f"r = CliRunner().invoke(cli, {argv!r}); assert r.exit_code == 0, r.output; "
        f"print(','.join(m for m in {(*heavy, *forbidden)!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
