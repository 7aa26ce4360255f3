"""The package's layers: base → data/models → training/selection → experiment → execution → analysis → workflow.

A module is named by its dotted path inside the package (``selection.kcenter``, ``config``).
Each sub-package (and each base module at the top level) has a layer; a module imports only
from its own layer or the ones before it, and nothing imports in a cycle. The package's
``__init__`` is the public facade: it imports lazily, on first use, and belongs to no layer.
"""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "alvae_utils"
BASE = {"paths", "config", "registry", "seeds", "device", "progress"}
LAYERS = [
    BASE,
    {"data", "models"},
    {"training", "selection"},
    {"experiment"},
    {"execution"},
    {"analysis"},
    {"workflow", "__main__"},
]


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


MODULES = {_name(path): path for path in PACKAGE.rglob("*.py")}


def _group(module: str) -> str:
    """The layer group of a module: its sub-package, or itself at the top level."""
    return module.split(".")[0]


def _imports(module: str) -> set[str]:
    """Package modules that ``module`` imports at run time (relative imports, at any depth of the file)."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module == "__init__":
        package = []
    tree = ast.parse(path.read_text())
    # Imports for type checkers only never run, so they make no cycle and no layering at run time.
    typing_only = {id(child) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and ast.unparse(node.test).endswith("TYPE_CHECKING") for child in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            names = [f"{node.module}.{alias.name}" for alias in node.names] if node.module else \
                [alias.name for alias in node.names]
            for name in names:
                # "from ..selection.methods import Method" → the module selection.methods
                parts = [*base, *name.split(".")]
                while parts and ".".join(parts) not in MODULES:
                    parts.pop()
                found.add(".".join(parts) if parts else "__init__")
    return found - {module}


def test_every_module_has_a_layer():
    groups = {_group(module) for module in MODULES} - {"__init__"}
    assert groups == set().union(*LAYERS)


def test_at_most_eight_modules_at_the_top_and_none_over_500_lines():
    top = [path.name for path in PACKAGE.glob("*.py")]
    assert len(top) <= 8, top
    long = {module: n for module, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 500}
    assert long == {}


def test_modules_import_only_from_their_layer_or_the_ones_before():
    layer = {name: index for index, names in enumerate(LAYERS) for name in names}
    upward = [(module, imported) for module in MODULES if module != "__init__" for imported in _imports(module)
              if imported != "__init__" and layer[_group(imported)] > layer[_group(module)]]
    assert upward == []


def test_the_facade_imports_nothing_eagerly():
    """``import alvae_utils`` stays cheap: the public names load on first use."""
    assert _imports("__init__") == set()


def test_there_are_no_import_cycles():
    graph = {module: _imports(module) - {"__init__"} for module in MODULES}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {error.args[1]}") from None


def test_the_public_api_is_one_import_away():
    import alvae_utils

    for name in alvae_utils.__all__:
        assert getattr(alvae_utils, name) is not None
