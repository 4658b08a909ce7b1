"""The plan: the binary document the host sends to the SMM driver (format in layout.py)."""
