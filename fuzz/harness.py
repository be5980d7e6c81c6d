"""Run one harness under atheris: `python -m fuzz.harness NAME [libFuzzer options] [DIRS]`.

Normally started by `fuzz.run`, which adds the limits, corpus and artifact directories. Given
a file instead of directories, libFuzzer runs that one input (to reproduce a finding).
The relay and fuzz modules are imported under `atheris.instrument_imports`, so their Python
code gives coverage feedback; with RELAY_FUZZ_NATIVE set (see `fuzz.native`) relay._native
comes from the instrumented build.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from fuzz.harnesses import HARNESSES


class InstrumentedNative(importlib.abc.MetaPathFinder):
    """Finds relay._native.* in the instrumented build before the regular import path does."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        package, _, leaf = fullname.rpartition(".")
        if package != "relay._native":
            return None
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = self.directory / f"{leaf}{suffix}"
            if candidate.is_file():
                return importlib.util.spec_from_file_location(fullname, candidate)
        return None


def load(entry: str) -> Callable[[bytes], None]:
    module_name, _, function = entry.partition(":")
    check: Callable[[bytes], None] = getattr(importlib.import_module(module_name), function)
    return check


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in HARNESSES:
        sys.exit(f"usage: python -m fuzz.harness NAME [libFuzzer options]; NAME is one of "
                 f"{', '.join(HARNESSES)}")
    harness = HARNESSES[sys.argv[1]]
    import atheris  # type: ignore[import-untyped]

    native = os.environ.get("RELAY_FUZZ_NATIVE")
    if native:
        if "asan_with_fuzzer" not in os.environ.get("LD_PRELOAD", ""):
            sys.exit("RELAY_FUZZ_NATIVE needs the sanitizer runtime in LD_PRELOAD "
                     "(see fuzz/native.py)")
        sys.meta_path.insert(0, InstrumentedNative(Path(native)))
    with atheris.instrument_imports(include=["relay", "fuzz"]):
        check = load(harness.entry)
    if native:
        import relay._native.rtmp_chunk as chunk

        if not str(chunk.__file__).startswith(native):
            sys.exit(f"relay._native came from {chunk.__file__}, not the instrumented build")
    # libFuzzer re-runs its own command line for -minimize_crash, -merge and -fork: make it
    # the module invocation, since this file is not executable on its own.
    atheris.Setup([f"{sys.executable} -m fuzz.harness {harness.name}", *sys.argv[2:]], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
