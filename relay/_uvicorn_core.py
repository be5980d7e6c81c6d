"""`relay` (the command) imports uvicorn's server without uvicorn's command line: imported
first by relay.cli.

Relay runs uvicorn's `Server` with a `Config` on its own loop (relay.app) and subclasses its
h11 protocol (relay.http_limits). `import uvicorn` (or of any of its submodules) first runs
uvicorn's `__init__`, which imports `uvicorn.main`: its command line with click, and its
process supervisors with multiprocessing, none of which a relay runs. So the package is left
unfinished (relay.partial_import) with the names its `__init__` would take from the modules
Relay uses (`Config`, `Server`, `__version__`; uvicorn's lifespan modules import `Config`
from the package); `uvicorn.main`, `uvicorn.run` or any other name looked up on it runs the
`__init__` then. A fresh `relay serve`: 76.2 -> 74.8 MiB VmRSS (`benchmarks/idle_memory.py`,
three runs each).
"""

from relay.partial_import import unfinished_package

#: The names uvicorn's `__init__` gives the package that Relay's use of it needs, and the
#: submodule each comes from.
PROVIDED = {"__version__": "_version", "Config": "config", "Server": "server"}

unfinished_package("uvicorn", PROVIDED)
