"""A Hugging Face checkpoint (folder or hub id) to GGUF (default Q4_K_M).

The same as `qwq-edge convert SOURCE --to gguf`; every option of that command works here:

    python converters/hf_to_gguf.py SOURCE [-o OUT] [options]
"""

import sys

from qwq_edge.cli import main

if __name__ == "__main__":
    main(["convert", "--to", "gguf", *sys.argv[1:]])
