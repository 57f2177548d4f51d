"""The imports run one way: in the pack nodes → samplers → models → vocabulary (→ ComfyUI, torch); in the
headless tools cli → batch → runner → model_files → prompts → errors; the pack and the tools never import
each other, and neither imports the developer folders (tests, testing, authoring, benchmarks, scripts).

Every .py is parsed with ``ast`` (nothing is imported or executed); the imports of the repository's own
modules, relative and absolute, form a graph that must have no cycle, no upward edge and no import
hidden inside a function. The checker itself is tested on planted sources, so a checker that can no
longer fail fails here.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACK_DIR = Path(__file__).resolve().parents[1]

#: Lower layers never import higher ones. The package's own ``__init__`` is ComfyUI's entry point.
LAYERS = {"vocabulary": 0, "models": 1, "samplers": 2, "nodes": 3, "": 4}
#: The headless tools' layers (``headless/<layer>``), the same rule.
HEADLESS = "headless"
HEADLESS_LAYERS = {"errors": 0, "prompts": 1, "model_files": 2, "runner": 3, "batch": 4, "cli": 5, "": 6}
#: Developer folders: they may import the pack and the tools; nothing else imports them.
TOOLING = ("tests", "scripts", "benchmarks", "testing", "authoring")
#: The lazy imports kept on purpose: ComfyUI calls ``comfy_entrypoint``, and importing ``nodes`` (which
#: imports ComfyUI) only there lets tests and tools import the package without ComfyUI; Ray is imported
#: only when a batch asks for it (``--ray``).
ALLOWED_LAZY = {("", "comfy_entrypoint", "nodes"), ("headless.cli.batch_command", "make_backend", "headless.batch.ray_actors")}


def module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def pack_sources(root: Path = PACK_DIR) -> dict[str, tuple[str, bool]]:
    """module name → (source, is_package) for every .py of the pack (hidden folders skipped)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(part.startswith(".") or part in ("__pycache__", "node_modules") for part in relative.parts):
            continue
        out[module_name(relative)] = (path.read_text(encoding="utf-8"), path.name == "__init__.py")
    return out


def layer_of(module: str) -> str:
    """The pack's layer (``models``), the tools' (``headless.runner``), or a developer folder (``tests``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == HEADLESS else parts[0]


def _rank(layer: str) -> tuple[str, int] | None:
    """(area, rank) of a layer: ``pack`` or ``headless``, and how high it sits; None for developer folders."""
    if layer in LAYERS:
        return "pack", LAYERS[layer]
    area, _, sub = layer.partition(".")
    if area == HEADLESS and sub in HEADLESS_LAYERS:
        return HEADLESS, HEADLESS_LAYERS[sub]
    return None


def _enclosing_functions(tree: ast.AST) -> dict[int, str]:
    """id(import node) → name of the innermost function around it (absent at module/class level)."""
    found: dict[int, str] = {}

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, (ast.Import, ast.ImportFrom)) and function is not None:
                found[id(child)] = function
            visit(child, inner)

    visit(tree, None)
    return found


@functools.lru_cache(maxsize=None)
def _parsed(name: str, source: str) -> tuple[ast.AST, dict[int, str]]:
    """The tree and its imports' enclosing functions, parsed once per source: the planted tests change one module."""
    tree = ast.parse(source, filename=name or "__init__")
    return tree, _enclosing_functions(tree)


def pack_imports(modules: dict[str, tuple[str, bool]]) -> list[tuple[str, str, str | None, int]]:
    """(importer, imported pack module, enclosing function or None, line) for every import of the pack's own modules."""
    tops = {m.split(".")[0] for m in modules if m}
    edges = []
    for name, (source, is_package) in modules.items():
        tree, functions = _parsed(name, source)
        package = name.split(".") if is_package else name.split(".")[:-1]
        package = [p for p in package if p]
        # The tools run outside the pack's package: their absolute ``import nodes`` is ComfyUI's nodes.py.
        absolute = tops - set(LAYERS) if name.split(".")[0] == HEADLESS else tops
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.split(".")[0] in absolute]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    keep = len(package) - (node.level - 1)
                    assert keep >= 0, f"{name}: relative import beyond the pack (line {node.lineno})"
                    base = package[:keep] + (node.module.split(".") if node.module else [])
                elif node.module and node.module.split(".")[0] in absolute:
                    base = node.module.split(".")
                else:
                    continue
                prefix = ".".join(base)
                for alias in node.names:  # ``from . import vocabulary`` imports a module, not a name
                    sub = f"{prefix}.{alias.name}" if prefix else alias.name
                    targets.append(sub if sub in modules else prefix)
            for target in targets:
                resolved = target
                while resolved and resolved not in modules:  # ``import models.errors.X``-style: the module part
                    resolved = resolved.rpartition(".")[0]
                edges.append((name, resolved, functions.get(id(node)), node.lineno))
    return edges


def violations(modules: dict[str, tuple[str, bool]]) -> list[str]:
    """Every upward import, import of tooling, lazy import and cycle, in words."""
    problems = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for importer, imported, function, line in sorted(set(pack_imports(modules)), key=str):
        where = f"{importer or '__init__'}:{line}"
        graph[importer].add(imported)
        low, high = layer_of(importer), layer_of(imported)
        if low in TOOLING:
            continue
        low_rank, high_rank = _rank(low), _rank(high)
        if high in TOOLING:
            problems.append(f"{where} imports tooling module {imported}")
        elif low_rank and high_rank and low_rank[0] != high_rank[0]:
            problems.append(f"{where} imports {imported}: the pack and the headless tools never import each other")
        elif low_rank and high_rank and high_rank[1] > low_rank[1]:
            problems.append(f"{where} imports {imported}: {high or 'the package root'} is above {low}")
        if function is not None and (importer, function, imported) not in ALLOWED_LAZY:
            problems.append(f"{where} imports {imported} lazily inside {function}(): import it at module level")
    problems += [f"import cycle: {' → '.join(cycle)}" for cycle in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per back edge found by a depth-first search (self-imports included)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


# ---- the pack -----------------------------------------------------------------------------------


def test_the_pack_imports_run_one_way():
    modules = pack_sources()
    assert {"vocabulary", "models.errors", "samplers.guider", "nodes.base"} <= set(modules)  # the tree was found
    assert {"headless.errors", "headless.runner.session", "headless.batch.run", "headless.cli.main"} <= set(modules)
    edges = pack_imports(modules)
    assert len(edges) > 20 and sum(1 for importer, *_ in edges if importer.startswith("headless.")) > 40  # and their imports were read
    assert violations(modules) == []


def test_the_vocabulary_imports_nothing_of_the_pack_and_no_comfyui():
    tree = ast.parse((PACK_DIR / "vocabulary.py").read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "." for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) if n.level == 0}
    assert all(n.level == 0 for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert imported <= {"__future__", "enum", "dataclasses", "typing"}


# ---- the checker can fail -----------------------------------------------------------------------


def _planted(extra: dict[str, str]) -> dict[str, tuple[str, bool]]:
    modules = pack_sources()
    for name, source in extra.items():
        modules[name] = (modules.get(name, ("", False))[0] + "\n" + source, modules.get(name, ("", False))[1])
    return modules


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("models.errors", "from ..samplers import guider\n", "models.errors:"),  # relative, upward
        ("models.errors", "from ..samplers.regions import to_latent\n", "is above models"),
        ("samplers.dual_cfg", "from ..nodes.base import InstructNode\n", "is above samplers"),
        ("vocabulary", "from .models import errors\n", "is above vocabulary"),
        ("models.masks", "import nodes.base\n", "is above models"),  # absolute
        ("models.masks", "from samplers.guider import IMAGE_KEY\n", "is above models"),
        ("models.masks", "def late():\n    from .errors import InstructError\n", "lazily inside late()"),
        ("samplers.regions", "class A:\n    def f(self):\n        from ..models import folders\n", "lazily inside f()"),
        ("nodes.base", "from ..tests import conftest\n", "imports tooling"),
        ("headless.prompts.checks", "from ..runner import session\n", "headless.runner is above headless.prompts"),
        ("headless.runner.session", "from ..batch.jobs import Job\n", "headless.batch is above headless.runner"),
        ("headless.model_files.check", "from ..cli.main import main\n", "headless.cli is above headless.model_files"),
        ("headless.runner.session", "from ...models import errors\n", "never import each other"),  # tools → pack
        ("models.masks", "import headless.errors\n", "never import each other"),  # pack → tools
        ("headless.cli.main", "import authoring.graph\n", "imports tooling"),
        ("headless.batch.run", "def late():\n    from ..runner import session\n", "lazily inside late()"),
    ],
)
def test_a_planted_violation_is_found(module, source, expected):
    found = violations(_planted({module: source}))
    assert any(expected in p for p in found), found


def test_a_planted_cycle_is_found():
    found = violations(_planted({"models.masks": "from .image_latent import SizeMode\n"}))  # image_latent imports masks
    assert any(p.startswith("import cycle:") and "models.masks" in p and "models.image_latent" in p for p in found), found
    found = violations(_planted({"headless.runner.images": "from .session import InProcessSession\n"}))  # session imports images
    assert any(p.startswith("import cycle:") and "headless.runner.images" in p for p in found), found


# ---- the node boundary (ComfyUI-backed) ---------------------------------------------------------


def test_every_node_takes_its_widgets_by_name(comfy):
    """execute names every input of its schema: a renamed widget fails here, not at run time. The one exception is
    the sampler nodes' shared guidance options, received as ``**guidance`` and declared once (``GuidanceWidgets``)."""
    import inspect

    shared = comfy.pack("nodes.guidance_options")
    takes_shared = 0
    for node_id in comfy.pack_node_ids:
        cls = comfy.nodes.NODE_CLASS_MAPPINGS[node_id]
        params = inspect.signature(cls.execute).parameters
        assert not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values()), f"{node_id}.execute takes *args"
        variadic = [name for name, p in params.items() if p.kind is inspect.Parameter.VAR_KEYWORD]
        inputs = cls.GET_SCHEMA().inputs
        named = {i.id for i in inputs}
        if variadic:
            assert variadic == ["guidance"], f"{node_id}.execute takes **{variadic[0]}"
            received = named - set(params)
            assert received and received <= shared.OPTION_IDS, f"{node_id}: **guidance receives {sorted(received - shared.OPTION_IDS)}"
            assert all(spec in inputs for spec in shared.GUIDANCE_OPTIONS), f"{node_id}: not every shared guidance option is declared"
            named -= received
            takes_shared += 1
        assert set(params) - set(variadic) == named, f"{node_id}: execute's parameters differ from its inputs"
        for spec in inputs:
            if spec.optional and spec.id in params:
                assert params[spec.id].default is not inspect.Parameter.empty, f"{node_id}: optional '{spec.id}' has no default"
    assert takes_shared == 3  # Instruct KSampler, Instruct Guider, Instruct KSampler + Edit Mask


def test_the_node_layer_names_the_node_once(comfy):
    from comfy_api.latest import io

    base, errors = comfy.pack("nodes.base"), comfy.pack("models.errors")

    class Probe(base.InstructNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(node_id="ArchitectureProbe", inputs=[io.Float.Input("x")], outputs=[])

        @classmethod
        def execute(cls, x: float) -> io.NodeOutput:
            if x > 0:
                raise errors.InstructInputError("'x' is too large; set it to 0 or less.")
            raise errors.InstructInputError("the adapter came first.", node="IPAdapter-Instruct")

    with pytest.raises(errors.InstructInputError) as err:
        Probe.execute(x=1.0)
    assert str(err.value) == "ArchitectureProbe: 'x' is too large; set it to 0 or less." and err.value.node == "ArchitectureProbe"
    with pytest.raises(errors.InstructInputError) as err:  # an error that already names its source keeps it
        Probe.execute(x=-1.0)
    assert str(err.value) == "IPAdapter-Instruct: the adapter came first."
    with pytest.raises(errors.InstructInputError, match=r"^ArchitectureProbe: 'x' is nan, not a finite number"):
        Probe.execute(x=float("nan"))
