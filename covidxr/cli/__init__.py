"""Every entry point: ``covidxr-<name>`` is ``covidxr.cli.<name>:main``.

Entry points compose and call library code; what they share is the Hydra set-up below.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from covidxr.utils.config import RESOLVERS
from covidxr.weights.registry import REGISTRY, study_keys


def register_configs() -> None:
    """Resolvers, and one ``backbone/<key>`` config per registry entry (idempotent)."""
    resolvers = {**RESOLVERS, "study_backbones": lambda: ",".join(study_keys())}  # paper_table
    for name, function in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=name == "uid")
    store = ConfigStore.instance()
    for spec in REGISTRY.values():
        store.store(group="backbone", name=spec.key, node=spec.config())
