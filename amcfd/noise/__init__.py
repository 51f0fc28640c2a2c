"""Noise analysis from the noisy images alone: estimators (``estimate``) and the ``auto`` option choices made
from them (``auto``). A core layer below the engine: it reads images (``data.imageio``) and the method registry,
and the engine, the options and the reports build on it."""
