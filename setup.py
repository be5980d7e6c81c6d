"""Build the native (Cython) part of Relay.

Every `native/<name>.pyx` becomes the extension module `relay._native.<name>`. Shared
inline helpers live in `.pxd` files under `native/` that have no `.pyx` of their own, so
cimporting them costs no import at run time.

`relay.srt._libsrt`, the cffi binding to libsrt, is built here too (`cffi_modules`); it needs
Debian's libsrt-openssl-dev.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

NATIVE = Path("native")

extensions = [
    Extension(
        f"relay._native.{source.stem}",
        [str(source)],
        extra_compile_args=["-O3"],
    )
    for source in sorted(NATIVE.glob("*.pyx"))
]

setup(
    cffi_modules=["relay/srt/_build_binding.py:ffi"],
    ext_modules=cythonize(
        extensions,
        include_path=[str(NATIVE)],
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
