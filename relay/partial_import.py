"""A package's submodules without its `__init__`, until something asks for more.

Importing any submodule of a package first runs the package's `__init__`, and some
packages' `__init__` imports far more than the submodules Relay uses: `sqlalchemy.ext.
asyncio`'s imports the ORM (relay.store.async_engine), uvicorn's its command line with click
and multiprocessing (relay._uvicorn_core). `unfinished_package` puts such a package into
`sys.modules` as the module object the import system would make from the package's own spec,
without running its `__init__`, holding only the names given to it (taken from its
submodules). The first lookup of any other name that is not a submodule (`from uvicorn
import run`, `sqlalchemy.ext.asyncio.AsyncSession`, `from pkg import *`) runs the `__init__`
then, in that same module object (PEP 562's module `__getattr__`): from there on the package
is what a plain import makes of it, with the same classes (its `__init__` takes them from the
submodules already imported). When the package was imported in full before, it is left as it
is.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any

# Held while a package is made or completed: its `__init__` runs once, in one thread.
_lock = threading.RLock()


def unfinished_package(name: str, provided: Mapping[str, str] | None = None) -> ModuleType:
    """The package `name` from sys.modules, put there without running its `__init__` when it
    is not there yet. `provided` maps names to set on it now to the submodule (relative to
    `name`) each is taken from: {"Config": "config"} sets `name.Config` to that of
    `name.config`, as the `__init__` would."""
    with _lock:
        found = sys.modules.get(name)
        if found is not None:
            return found
        spec = importlib.util.find_spec(name)  # imports the parents, not `name` itself
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            raise ImportError(f"{name} is not an importable package (spec {spec!r})",
                              name=name)
        loader = spec.loader
        package = importlib.util.module_from_spec(spec)

        def complete(attribute: str) -> Any:
            if importlib.machinery.PathFinder.find_spec(attribute, package.__path__):
                # A submodule not imported yet (`from . import exc` asks the package
                # first): no such attribute, so the import system imports it.
                raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
            with _lock:
                if package.__dict__.get("__getattr__") is complete:
                    # Once: from here on a name the package lacks is an AttributeError.
                    del package.__dict__["__getattr__"]
                    loader.exec_module(package)
            try:
                return package.__dict__[attribute]
            except KeyError:
                raise AttributeError(
                    f"module {name!r} has no attribute {attribute!r}") from None

        package.__dict__["__getattr__"] = complete
        sys.modules[name] = package
        parent, _, child = name.rpartition(".")
        if parent:  # as the import system does for a submodule it loaded
            setattr(sys.modules[parent], child, package)
        try:
            for attribute, submodule in (provided or {}).items():
                module = importlib.import_module(f"{name}.{submodule}")
                package.__dict__[attribute] = getattr(module, attribute)
        except BaseException:
            if sys.modules.get(name) is package:
                del sys.modules[name]
            raise
        return package
