"""Pure Flax modules, one file per network family."""
