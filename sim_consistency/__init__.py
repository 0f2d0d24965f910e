"""sim-consistency: representation analysis of image models and model merges."""

__version__ = "0.1.0"
