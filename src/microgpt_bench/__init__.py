"""microgpt-bench: how fast can one tiny transformer run, every way people run it."""
__version__ = "0.1.0"
