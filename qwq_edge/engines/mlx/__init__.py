"""The MLX adapter: its spec (adapter), engine, pool, one thread, raw baseline and distributed ranks."""
