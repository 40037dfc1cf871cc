"""Every entry point: ``covidxr-<name>`` is ``covidxr.cli.<name>:main``.

Entry points compose and call library code; what they share is the Hydra set-up below.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from covidxr.utils.config import RESOLVERS
from covidxr.weights.registry import REGISTRY, study_keys


def _form_suffix(fmt: str) -> str:
    """The file suffix of ``format=<fmt>`` in the table of forms (imported when asked)."""
    from covidxr.inference.forms import FORMS

    return FORMS[fmt].suffix if fmt in FORMS else f".{fmt}"


def register_configs() -> None:
    """Resolvers, and one ``backbone/<key>`` config per registry entry (idempotent)."""
    resolvers = {
        **RESOLVERS,
        "study_backbones": lambda: ",".join(study_keys()),  # the paper_table sweep
        "form_suffix": _form_suffix,  # covidxr-export's default output name
    }
    for name, function in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=name == "uid")
    store = ConfigStore.instance()
    for spec in REGISTRY.values():
        store.store(group="backbone", name=spec.key, node=spec.config())
