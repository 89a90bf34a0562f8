"""The llama.cpp adapter: its spec (adapter), engine, pool, one thread and raw baseline."""
