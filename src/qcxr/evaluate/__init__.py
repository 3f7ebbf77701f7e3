"""Evaluation: metrics, the runs of an experiment, statistics across seeds, figures, report."""
