"""A Hugging Face checkpoint (folder or hub id) or a GGUF file to an MLX model folder.

The same as `qwq-edge convert SOURCE --to mlx`; every option of that command works here:

    python converters/hf_to_mlx.py SOURCE [-o OUT] [options]
"""

import sys

from qwq_edge.cli import main

if __name__ == "__main__":
    main(["convert", "--to", "mlx", *sys.argv[1:]])
