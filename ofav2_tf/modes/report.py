"""Mode 'report' (being written)."""
