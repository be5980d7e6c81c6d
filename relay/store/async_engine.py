"""SQLAlchemy's asyncio engine without its ORM.

The store uses SQLAlchemy Core through `sqlalchemy.ext.asyncio`'s `AsyncEngine` and
`AsyncConnection` (its `engine` module), never a session. But importing any module of that
package first runs the package's `__init__`, which imports its `session` and `scoping`
modules and through them `sqlalchemy.orm`: about 6 MiB of Python objects that a relay
would hold from start-up on and never use (a fresh `relay serve`: 85.9 -> 79.9 MiB VmRSS,
`benchmarks/idle_memory.py`, three runs each).

So `create_async_engine` here imports the `engine` module under the package left
unfinished (relay.partial_import): the first lookup of any other name on it
(`from sqlalchemy.ext.asyncio import AsyncSession`) runs the package's `__init__` then, and
the classes are the same either way. When the package was imported in full before (a test,
a tool), this uses it as it is.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from relay.partial_import import unfinished_package

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

PACKAGE = "sqlalchemy.ext.asyncio"
ENGINE_MODULE = PACKAGE + ".engine"


def engine_module() -> ModuleType:
    """`sqlalchemy.ext.asyncio.engine`, imported without the package's `__init__` (and so
    without `sqlalchemy.orm`) unless the package was imported already."""
    unfinished_package(PACKAGE)
    return importlib.import_module(ENGINE_MODULE)


def create_async_engine(url: str) -> AsyncEngine:
    """`sqlalchemy.ext.asyncio.create_async_engine(url)` (see the module's docstring)."""
    engine: AsyncEngine = engine_module().create_async_engine(url)
    return engine
