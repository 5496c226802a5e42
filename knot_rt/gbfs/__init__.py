"""GBFS v3.0: the public feeds of the public networks, built from the live state in memory."""
