"""Forming splits and groups: which images a run uses (``SplitSpec``), the index and its
split, near-duplicate, patient and site groups, folds, and the leakage audit. A new split rule
lives here."""
