"""Generators of the shipped corpora (the generated files sit beside them)."""
