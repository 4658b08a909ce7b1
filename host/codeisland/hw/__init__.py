"""Hardware access through chipsec: the chipsec-backed Transport, our chipsec helper for QEMU,
configuration-table discovery, and the `doctor` checks."""
