"""codeisland: dynamic code islanding with predictive relocation through an SMM handler."""

__version__ = "0.1.0"
