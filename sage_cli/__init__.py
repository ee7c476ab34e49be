"""Sage: semantic-guided fine-tuning of CLIP for long-tailed recognition."""
__version__ = "0.1.0"
