"""relay.partial_import: a package's submodules without its `__init__`, which runs once on
the first other name asked of the package, in the same module object."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.partial_import import unfinished_package

INIT = '''
import sys
from .core import Thing
from .heavy import LOADED
sys.modules[__name__].init_runs = getattr(sys.modules[__name__], "init_runs", 0) + 1
extra = "from the __init__"
'''
CORE = '''
from . import helper
class Thing:
    made_by = helper.NAME
'''


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package `partialpkg_<n>` whose `__init__` imports a `heavy` module."""
    name = "partialpkg_" + re.sub(r"\W", "_", tmp_path.name)
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text(INIT)
    (root / "core.py").write_text(CORE)
    (root / "helper.py").write_text("NAME = 'helper'\n")
    (root / "heavy.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_the_names_given_come_without_the_init_and_the_rest_runs_it_once(
        package: str) -> None:
    made = unfinished_package(package, {"Thing": "core"})
    assert sys.modules[package] is made
    # The submodule and what it imports relatively (`from . import helper`) are there; the
    # __init__ has not run, so neither has its import of `heavy`.
    assert made.Thing.made_by == "helper"
    assert f"{package}.heavy" not in sys.modules
    assert "init_runs" not in made.__dict__
    core = importlib.import_module(f"{package}.core")
    assert f"{package}.heavy" not in sys.modules
    # Any other name runs the __init__, once, in the same module object.
    extra = importlib.import_module(package).extra
    assert extra == "from the __init__"
    assert made.init_runs == 1 and f"{package}.heavy" in sys.modules
    assert made.Thing is core.Thing  # the class the names given were taken from
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        _ = made.missing
    assert made.init_runs == 1


def test_from_import_of_a_name_it_lacks_completes_the_package(package: str) -> None:
    unfinished_package(package)
    namespace: dict[str, object] = {}
    exec(f"from {package} import extra", namespace)
    assert namespace["extra"] == "from the __init__"
    assert sys.modules[package].init_runs == 1


def test_a_package_imported_before_is_left_as_it_is(package: str) -> None:
    imported = importlib.import_module(package)
    assert unfinished_package(package, {"Thing": "core"}) is imported
    assert imported.init_runs == 1 and "__getattr__" not in imported.__dict__


def test_a_name_that_is_not_a_package(package: str) -> None:
    with pytest.raises(ImportError, match="not an importable package"):
        unfinished_package(f"{package}.helper")
