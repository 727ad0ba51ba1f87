"""Mode 'run_all' (being written)."""
