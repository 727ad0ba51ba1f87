"""Mode 'export' (being written)."""
