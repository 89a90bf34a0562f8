"""A GGUF file back to a Hugging Face checkpoint (safetensors + config + tokenizer).

The same as `qwq-edge convert SOURCE --to hf`; every option of that command works here:

    python converters/gguf_to_hf.py SOURCE [-o OUT] [options]
"""

import sys

from qwq_edge.cli import main

if __name__ == "__main__":
    main(["convert", "--to", "hf", *sys.argv[1:]])
