"""Imports point down the layering written in ``liquid_jax/__init__.py``: a module imports
only from its own layer or a lower one, at module level and inside functions alike.

The import graph is read from the source (``ast``), so an import hidden in a function
to dodge a cycle counts like any other.
"""

import ast
import os

import pytest

import liquid_jax

PACKAGE = os.path.dirname(liquid_jax.__file__)


def module_name(path: str) -> str:
    relative = os.path.relpath(path, os.path.dirname(PACKAGE))[: -len(".py")]
    return relative.replace(os.sep, ".").removesuffix(".__init__")


def imports(path: str) -> list[tuple[int, str]]:
    """(line, liquid_jax module) of every import in the file, function-level ones included."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found if name.startswith("liquid_jax.")]


def violations(sources: dict[str, str]) -> list[str]:
    """Every import of ``sources`` ({module: path}) that points up the layering."""
    found = []
    for module, path in sorted(sources.items()):
        here = liquid_jax.layer_of(module)
        for line, name in imports(path):
            there = liquid_jax.layer_of(name)
            if there > here:
                found.append(f"{path}:{line}: {module} (layer {here}) imports {name} (layer {there})")
    return found


def package_sources() -> dict[str, str]:
    sources = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                sources[module_name(path)] = path
    return {m: p for m, p in sources.items() if m != "liquid_jax"}  # the root re-exports the API


def test_every_import_points_down_the_layering():
    assert violations(package_sources()) == []


def test_every_module_has_a_layer():
    for module in package_sources():
        liquid_jax.layer_of(module)  # raises for a package missing from the layering


@pytest.mark.parametrize("at_module_level", [True, False])
def test_an_upward_import_is_caught_even_inside_a_function(tmp_path, at_module_level):
    body = ("from liquid_jax.sample import filters\n" if at_module_level
            else "def f():\n    from liquid_jax.sample import filters\n    return filters\n")
    path = tmp_path / "bad.py"
    path.write_text(body)
    found = violations({"liquid_jax.data.bad": str(path)})
    assert len(found) == 1 and "liquid_jax.data.bad (layer" in found[0] and "liquid_jax.sample.filters" in found[0]
