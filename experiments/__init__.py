"""Thin ``python -m experiments.<name>`` modules over the specdiff library."""
