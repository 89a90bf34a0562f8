"""One thread runs every llama.cpp load and forward pass in the process.

llama.cpp's CPU backend runs its worker threads with OpenMP (libgomp). libgomp keeps a
team of workers for every thread that has started a parallel region, for as long as that
thread lives, and once the teams together hold more threads than there are cores, its
workers stop spinning at the barriers between operations (100 spins instead of 300,000)
and sleep: every barrier then waits for a wake-up. So once two live threads had run
passes (a model used from the main thread and then from a server's worker, the Python
API called from a thread pool, the batching scheduler's thread after a pool's load),
every pass was slower: on 2 cores and the 0.5B model, 31.4 against 21.9 ms per token,
a 4-sequence pass 61–72 against 51 ms. With every load and pass on one long-lived
thread there is one team, whichever thread asks."""

from __future__ import annotations

from ..one_thread import OneThread

_THREAD = OneThread("qwq-edge-llama.cpp")

#: ``work()``, run on the process's llama.cpp thread (the caller waits for it).
on_llama_thread = _THREAD.run
#: ``items``, each one computed on the llama.cpp thread (for a generator that decodes as it goes).
iterate_on_llama_thread = _THREAD.iterate
