"""What runs report: a run's metrics and plots, the comparison across runs, W&B panels."""
