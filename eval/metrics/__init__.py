"""Metrics, one module per task family."""
