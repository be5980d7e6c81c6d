"""An instrumented build of relay._native for fuzzing: clang with libFuzzer's coverage
(-fsanitize=fuzzer-no-link) and AddressSanitizer, in a directory of its own.

atheris instruments Python bytecode itself (`atheris.instrument_imports`); compiled code is
seen only when it was compiled with sanitizer coverage. The build goes to `fuzz/build/native`
and never replaces the worktree's own `relay/_native/*.so`; `fuzz.harness` loads it in their
place when RELAY_FUZZ_NATIVE names it. The sanitizer runtime with libFuzzer linked in
(atheris ships it as asan_with_fuzzer.so) must be preloaded (LD_PRELOAD) into that process:
libFuzzer's coverage symbols have to be global before the module loads, and ASan's runtime
must come first. `fuzz.run` arranges both; without clang it runs the plain build, and the
native code then gives no coverage feedback (its Python callers still do).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "fuzz" / "build" / "native"
#: Where the instrumented modules land (the package directory inside the build).
MODULES = BUILD / "lib" / "relay" / "_native"
#: clang versions tried, newest first; Debian 12 ships clang-14 (with libclang-rt-14-dev
#: for the sanitizer runtimes the link step needs).
CLANGS = ("clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14")
SANITIZE = "-fsanitize=address,fuzzer-no-link"
#: Leaks are not findings: Python keeps objects alive to the end on purpose.
ASAN_OPTIONS = "detect_leaks=0:allocator_may_return_null=1"


def find_clang() -> str | None:
    for name in CLANGS:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def sanitizer_runtime() -> Path:
    """atheris's AddressSanitizer runtime with libFuzzer linked in."""
    import atheris  # type: ignore[import-untyped]

    return Path(atheris.path()) / "asan_with_fuzzer.so"


def build(clang: str) -> Path:
    """Build the instrumented modules (setuptools rebuilds only what changed); return their
    directory. Raises CalledProcessError with the compiler's output when the build fails."""
    env = {**os.environ, "CC": clang, "LDSHARED": f"{clang} -shared", "CFLAGS": SANITIZE}
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(BUILD / "lib"),
         "--build-temp", str(BUILD / "tmp")],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return MODULES


def harness_environment(modules: Path) -> dict[str, str]:
    """What a harness process needs to run on the instrumented build."""
    return {"RELAY_FUZZ_NATIVE": str(modules), "LD_PRELOAD": str(sanitizer_runtime()),
            "ASAN_OPTIONS": ASAN_OPTIONS}
