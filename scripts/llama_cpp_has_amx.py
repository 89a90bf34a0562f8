"""Exit 0 when the installed llama-cpp-python's CPU backend holds llama.cpp's AMX kernel, 1 otherwise.

That kernel crashes on the machines CI runs on (see .ci/run), so CI rebuilds the library without it.
"""

import sys
from importlib.util import find_spec
from pathlib import Path

spec = find_spec("llama_cpp")
libraries = Path(spec.origin).parent.joinpath("lib").glob("libggml-cpu*") if spec and spec.origin else ()
sys.exit(0 if any(b"ggml_backend_amx_mul_mat" in path.read_bytes() for path in libraries) else 1)
