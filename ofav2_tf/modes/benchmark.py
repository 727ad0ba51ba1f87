"""Mode 'benchmark' (being written)."""
