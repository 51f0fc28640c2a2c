"""Self-supervised schemes: how a batch becomes a loss and how a trained net denoises an image."""
from amcfd.methods.base import Method

__all__ = ["Method"]
