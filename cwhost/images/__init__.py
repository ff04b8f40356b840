"""Workstation types' boot images: their packages, how they are built, and where the built ones are."""
