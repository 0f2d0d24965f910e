"""A user's own architectures, imported by the ``python`` source tests through ``python_path``."""
