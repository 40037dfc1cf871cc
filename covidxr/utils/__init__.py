"""Shared plumbing: Hydra config helpers, the job runner, environment defaults, atomic writes."""
