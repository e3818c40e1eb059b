"""Metrics, comparison tables and the run report."""
