"""Mode 'search' (being written)."""
