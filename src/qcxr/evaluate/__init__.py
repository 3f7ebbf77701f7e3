"""Evaluation: metrics, statistics across seeds, figures, report."""
