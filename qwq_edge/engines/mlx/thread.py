"""One thread runs every MLX computation in the process.

MLX keeps a stream per thread: a process that exits while a thread that used MLX is
ending aborts ("terminate called without an active exception": 6 of 16 runs of a script
whose generations ran in threads of their own, none once every MLX call ran here), and a
lazy graph built on one thread cannot be evaluated on another ("There is no Stream(cpu,
0) in current thread"). With every load, pass and draw on one long-lived thread, whichever
thread asks, neither can happen.
"""

from __future__ import annotations

from ..one_thread import OneThread

_THREAD = OneThread("qwq-edge-mlx")

#: ``work()``, run on the process's MLX thread (the caller waits for it).
on_mlx_thread = _THREAD.run
