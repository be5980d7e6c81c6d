# The cffi module built by relay/srt/_build_binding.py; its declarations (CDEF there) are
# the typing: cffi's `ffi` and `lib` objects are dynamic.
from typing import Any

ffi: Any
lib: Any
