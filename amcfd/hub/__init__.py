"""Checkpoints from elsewhere: the importers of the authors' layouts (``importers``) and the registry of released
weights known by name (``weights``, ``amcfd-weights``)."""
