"""`relay` (the command) runs without `pydantic.v1`: imported first by relay.cli.

FastAPI (0.165) imports `pydantic.v1` at the first route it declares, only to check whether
an annotation is a pydantic v1 model and refuse it ("pydantic.v1 models are no longer
supported by FastAPI"); where the import fails it answers "not a v1 model", as on a pydantic
without `pydantic.v1` (`fastapi._compat.shared.is_pydantic_v1_model_class`). Relay has no v1
model, so the answer is the same either way; the import itself left 1.9 MiB of objects in a
fresh `relay serve` (`pydantic.v1` and the Cython it looks for: 78.3 -> 76.2 MiB VmRSS,
`benchmarks/idle_memory.py`, three runs each).

pydantic itself imports `pydantic.v1` only when it makes the schema of a type with v1's
`__get_validators__` (to warn that v1 and v2 do not mix): Relay has no such type, and its
models' and routes' schemas are made at start-up, so one added later would stop the start
with the error below rather than fail a request.

A None entry in `sys.modules` is Python's own way to make a module absent: importing it then
raises ModuleNotFoundError ("import of pydantic.v1 halted; None in sys.modules"), which names
it to whoever adds a dependency that needs it. When something imported it before, it stays.
"""

import sys

#: The module a relay process runs without.
ABSENT = "pydantic.v1"

sys.modules.setdefault(ABSENT, None)  # type: ignore[arg-type]
