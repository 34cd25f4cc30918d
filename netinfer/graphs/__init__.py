"""The graph store and what goes into it (see ``sources`` for curated priors)."""
