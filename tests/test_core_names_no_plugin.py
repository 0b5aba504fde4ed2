"""The core (``bench/`` = ``facebench``) names no plugin: plugins register themselves, and the
core reaches them only through the registries and contracts (``Trainable``, ``Defense``...).

Two checks over every module of the core: it imports no plugin module by name (a submodule of
``facebench.defenses`` / ``attacks`` / ``models`` / ``datasets``, in an import statement or a
string), and its text names none of SIDE's and PIN's parts (``side_model``, ``pin_model``,
``eigen...``, ``antibod...``). ``KNOWN`` lists what is left, owned elsewhere; an entry that
disappears must be removed from it, so the list only shrinks.
"""
import ast
import re
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "bench"
PLUGIN_PACKAGES = ("facebench.defenses", "facebench.attacks", "facebench.models",
                   "facebench.datasets")
WORDS = re.compile(r"side_model|pin_model|eigen|antibod", re.IGNORECASE)
PLUGIN_MODULE = re.compile(r"facebench\.(defenses|attacks|models|datasets)\.\w")

#: (core file, offending token) pairs still to be removed, with who removes them
KNOWN: set = set()  # nothing left; add an entry only with the issue that removes it


def _module(path: Path) -> str:
    parts = path.relative_to(CORE).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(("facebench",) + parts)


def _imports(path: Path, tree: ast.AST):
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = _module(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)


def _is_plugin(name: str) -> bool:
    return any(name.startswith(p + ".") for p in PLUGIN_PACKAGES)


def violations():
    found = set()
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE).as_posix()
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        found |= {(rel, name) for name in _imports(path, tree) if _is_plugin(name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found |= {(rel, m.group(0).rstrip(".")) for m in re.finditer(
                    r"facebench(\.\w+)+", node.value) if PLUGIN_MODULE.match(m.group(0))}
        found |= {(rel, m.group(0).lower()) for m in WORDS.finditer(text)}
        found |= {(rel, m.group(0)) for m in re.finditer(r"facebench\.eigen\w*", text)}
    return found


def test_core_names_no_plugin():
    new = sorted(violations() - KNOWN)
    assert not new, ("the core names a plugin (reach it through a registry or a contract "
                     f"instead): {new}")


def test_known_violations_are_still_there():
    gone = sorted(KNOWN - violations())
    assert not gone, f"fixed: remove {gone} from KNOWN in this test"


def test_the_check_sees_a_plugin_import(tmp_path):
    """The import resolution itself: relative and absolute plugin imports are both found."""
    tree = ast.parse("from .defenses.side import SIDE\nimport facebench.attacks.pgd\n"
                     "from facebench.defenses import quilting\n")
    names = set(_imports(CORE / "runner.py", tree))
    assert {"facebench.defenses.side", "facebench.attacks.pgd",
            "facebench.defenses.quilting"} <= names
    assert all(_is_plugin(n) for n in names if n != "facebench.defenses")


def _plugin_names() -> dict:
    """Registered name -> registry kind, for every entry a plugin (not the core) registers."""
    from facebench import registry as R

    found = {}
    for reg in (R.RECOGNIZERS, R.DEFENSES, R.ATTACKS, R.DATASETS, R.ALIGNERS, R.LAYOUTS):
        for name, obj in reg.items():
            module = getattr(obj, "__module__", "") or ""
            if _is_plugin(module) and name != "none":  # "none" is the core's "no X"
                found[name] = reg.kind
    return found


def test_core_strings_name_no_registered_plugin():
    """No string literal of the core is the name of a registered plugin: defaults come from
    ``register(..., default=...)``, so the core never says "pgd" or "dlib-resnet"."""
    names = _plugin_names()
    assert {"pgd", "dlib-resnet", "lfw", "lfw-sample", "dlib-chip", "side"} <= set(names)
    hits = set()
    for path in sorted(CORE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        keys = {id(k) for node in ast.walk(tree) if isinstance(node, ast.Dict)
                for k in node.keys if k is not None}  # a field name such as "pairs"
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value in names and id(node) not in keys:
                hits.add((path.relative_to(CORE).as_posix(), node.value, node.lineno))
    assert not hits, f"the core names registered plugins: {sorted(hits)}"
