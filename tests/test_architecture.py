"""Module boundaries: every import inside ``qwq_edge`` goes down the layers, never up, and
no module imports itself back through others.

Layers are folders (and the few modules at the package root); a module may import its own
layer and the layers below (imports inside functions and under ``TYPE_CHECKING`` count too):

| layer | folders and root modules | what they are |
|---|---|---|
| 0 bottom | errors, events, sampling, files, resources, | facts and types everyone shares |
| | text/, architecture/, system/ | |
| 1 core | reasoning/ · engines/ (apart) | the controller · the adapters, registry |
| 2 convert | convert/ (engine libraries in functions) | the converters |
| 3 catalog | catalog/ | the catalog, families, the memory planner, downloads |
| 4 runtime | runtime/, speculation/ | options, prompts, the loop, the model, chats |
| 5 services | services/, server/ | info, eval, bench, the fixture; the HTTP server |
| 6 front | cli/, the ``qwq_edge`` package itself, __main__ | the CLI and the public names |

Further rules: ``reasoning/`` imports nothing from ``engines/`` (and the reverse);
only ``engines/``, ``convert/`` and ``system/machine`` import an engine library (``llama_cpp``,
``mlx``, ``mlx_lm``), and ``import qwq_edge.convert`` (or the CLI) works without them.
"""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "qwq_edge"
LAYERS = {
    0: ("errors", "events", "sampling", "files", "resources", "text", "architecture", "system"),
    1: ("reasoning", "engines"),
    2: ("convert",),
    3: ("catalog",),
    4: ("runtime", "speculation"),
    5: ("services", "server"),
    6: ("cli", "__main__", ""),
}
LAYER_OF = {top: layer for layer, tops in LAYERS.items() for top in tops}
SIBLINGS_APART = {("reasoning", "engines"), ("engines", "reasoning")}
ENGINE_LIBRARIES = {"llama_cpp", "mlx", "mlx_lm"}


def module_name(path: Path) -> str:
    """``engines.registry`` for qwq_edge/engines/registry.py; ``""`` for the package itself."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (``qwq_edge.engines.base``, ``numpy``)."""
    name = module_name(path)
    package = ["qwq_edge", *name.split(".")] if name else ["qwq_edge"]
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            found.add(".".join([*base, *([node.module] if node.module else [])]))
    return found


def top(module: str) -> str:
    """The first name inside the package (``engines`` for ``qwq_edge.engines.base``; ``""`` for the package)."""
    return module.removeprefix("qwq_edge").removeprefix(".").split(".")[0]


MODULES = {module_name(path): imported(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    unplaced = sorted(name for name in MODULES if top(name) not in LAYER_OF)
    assert not unplaced, f"add these modules to a layer in LAYERS: {unplaced}"


def test_no_module_imports_a_higher_layer():
    upward = []
    for name, targets in MODULES.items():
        for target in targets:
            if target != "qwq_edge" and not target.startswith("qwq_edge."):
                continue
            source_top, target_top = top(name), top(target)
            if LAYER_OF[target_top] > LAYER_OF[source_top] or (source_top, target_top) in SIBLINGS_APART:
                upward.append(f"{name or 'qwq_edge'} imports {target}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_only_engines_convert_and_machine_import_an_engine_library():
    offenders = [
        f"{name} imports {target}"
        for name, targets in MODULES.items()
        for target in targets
        if target.split(".")[0] in ENGINE_LIBRARIES
        and top(name) not in ("engines", "convert")
        and name != "system.machine"
    ]
    assert not offenders, "\n".join(offenders)


BLOCKER = """
import sys
class Blocker:
    tried = []
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"llama_cpp", "mlx", "mlx_lm"}:
            Blocker.tried.append(name)
            raise ImportError(f"{name} is blocked for this test")
        return None
sys.meta_path.insert(0, Blocker())
import qwq_edge.convert, qwq_edge.cli, qwq_edge.engines.registry, qwq_edge.catalog.store, qwq_edge.services.inspection
from qwq_edge.cli import main
assert not Blocker.tried, Blocker.tried
print("ok")
"""


def test_the_converters_and_the_cli_import_without_engine_libraries():
    proc = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def internal(module: str) -> str | None:
    """``engines.base`` for an import of ``qwq_edge.engines.base`` (or of a name in it); None outside."""
    if module != "qwq_edge" and not module.startswith("qwq_edge."):
        return None
    name = module.removeprefix("qwq_edge").removeprefix(".")
    while name and name not in MODULES:  # ``from .x import name``: the module is x
        name = name.rpartition(".")[0]
    return name


def cycle_through(start: str) -> list[str] | None:
    """A path of imports that leads from ``start`` back to it (packages' ``__init__`` aside)."""
    stack, seen = [(start, [start])], set()
    while stack:
        name, path = stack.pop()
        for target in sorted(filter(None, map(internal, MODULES[name]))):
            if target == start and len(path) > 1:
                return [*path, start]
            if target not in seen and target != name:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_no_import_circle():
    """Every module's imports, in functions and under ``TYPE_CHECKING`` too, form no circle (a
    package's ``__init__`` re-exporting its modules is not a module importing back)."""
    circles = [" -> ".join(path) for name in MODULES if name and (path := cycle_through(name))]
    assert not circles, "import circles:\n" + "\n".join(circles)
