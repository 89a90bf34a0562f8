"""Which models exist and which fit: the catalog, model families, the memory planner, downloads."""
