"""Mode 'profile' (being written)."""
