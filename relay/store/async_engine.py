"""SQLAlchemy's asyncio engine without its ORM.

The store uses SQLAlchemy Core through `sqlalchemy.ext.asyncio`'s `AsyncEngine` and
`AsyncConnection` (its `engine` module), never a session. But importing any module of that
package first runs the package's `__init__`, which imports its `session` and `scoping`
modules and through them `sqlalchemy.orm`: about 6 MiB of Python objects that a relay
would hold from start-up on and never use (a fresh `relay serve`: 85.9 -> 79.9 MiB VmRSS,
`benchmarks/idle_memory.py`, three runs each).

So `create_async_engine` here imports the `engine` module under a package object made from
the package's own spec whose `__init__` has not run yet. The first lookup of any other name
on the package (`from sqlalchemy.ext.asyncio import AsyncSession`, `sqlalchemy.ext.asyncio.
AsyncEngine`) runs that `__init__` then, in the same module object: from there on it is the
package as a plain import would have made it, and the classes are the same ones either way
(its `__init__` takes them from the `engine` module already imported). When the package was
imported in full before (a test, a tool), this uses it as it is.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

PACKAGE = "sqlalchemy.ext.asyncio"
ENGINE_MODULE = PACKAGE + ".engine"

_completing = threading.Lock()


def _unfinished_package() -> None:
    """Put PACKAGE into sys.modules without running its `__init__`; the first attribute
    it lacks runs it (PEP 562's module `__getattr__`)."""
    spec = importlib.util.find_spec(PACKAGE)  # imports the parents, not PACKAGE itself
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{PACKAGE} is not an importable package (spec {spec!r})")
    loader = spec.loader
    package = importlib.util.module_from_spec(spec)

    def complete(name: str) -> Any:
        if importlib.machinery.PathFinder.find_spec(name, package.__path__) is not None:
            # A submodule (`from . import exc` in `engine` asks the package first): not
            # there yet, so the import system imports it.
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
        with _completing:
            if package.__dict__.get("__getattr__") is complete:
                # Once: from here on a name the package lacks is an AttributeError.
                del package.__dict__["__getattr__"]
                loader.exec_module(package)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None

    package.__dict__["__getattr__"] = complete
    sys.modules[PACKAGE] = package
    # As the import system does for a submodule it loaded: the parent names it.
    parent, _, child = PACKAGE.rpartition(".")
    setattr(sys.modules[parent], child, package)


def engine_module() -> ModuleType:
    """`sqlalchemy.ext.asyncio.engine`, imported without the package's `__init__` (and so
    without `sqlalchemy.orm`) unless the package was imported already."""
    if ENGINE_MODULE not in sys.modules:
        with _completing:
            if PACKAGE not in sys.modules:
                _unfinished_package()
    return importlib.import_module(ENGINE_MODULE)


def create_async_engine(url: str) -> AsyncEngine:
    """`sqlalchemy.ext.asyncio.create_async_engine(url)` (see the module's docstring)."""
    engine: AsyncEngine = engine_module().create_async_engine(url)
    return engine
