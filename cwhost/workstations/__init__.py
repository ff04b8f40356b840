"""Workstations: the model (a leaf everyone imports), their store, and their life cycle."""
