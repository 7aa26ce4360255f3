"""The package's layers: data/models → training/selection → experiments → analysis → workflow, with no cycles."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "alvae_utils"
LAYERS = [
    {"__init__", "paths", "config", "registry", "seeds", "device", "progress"},
    {"data", "fixtures", "models"},
    {"metrics", "training", "vae", "ssvae", "mixture_prior", "selection", "heuristics", "features", "methods",
     "profiles", "overrides", "results"},
    {"loop", "tsne", "tsne_experiment"},
    {"execution"},
    {"stats", "open_questions", "tables", "figures", "plots"},
    {"notebooks", "workflow", "cli", "__main__"},
]


def _imports(module: Path) -> set[str]:
    """Package modules that ``module`` imports (relative imports), at any depth of the file.

    ``from . import __version__`` imports the package itself (``__init__``).
    """
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = {node.module} if node.module else {alias.name for alias in node.names}
            found |= {name if name in modules else "__init__" for name in names}
    return found - {module.stem}


def test_every_module_has_a_layer():
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert modules == set().union(*LAYERS)


def test_modules_import_only_from_their_layer_or_the_ones_before():
    layer = {name: index for index, names in enumerate(LAYERS) for name in names}
    upward = [(path.stem, imported) for path in PACKAGE.glob("*.py") for imported in _imports(path)
              if layer[imported] > layer[path.stem]]
    assert upward == []


def test_there_are_no_import_cycles():
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {error.args[1]}") from None
