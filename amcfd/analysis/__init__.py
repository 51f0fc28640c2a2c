"""Analysis helpers: writing measured results into the repository's documents."""
