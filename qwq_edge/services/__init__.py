"""What the CLI and the server offer beyond generating: info, eval, bench, the test fixture."""
