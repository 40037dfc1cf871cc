"""Every entry point: ``covidxr-<name>`` is ``covidxr.cli.<name>:main``.

Entry points compose and call library code; what they share is the Hydra set-up below.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Sequence

import hydra
from hydra.core.config_store import ConfigStore

from covidxr.paths import CONF_DIR
from covidxr.utils.config import register_resolvers
from covidxr.utils.errors import exit_with_user_error, report_user_errors
from covidxr.weights.local import local_specs
from covidxr.weights.registry import REGISTRY, study_keys


def _form_suffix(fmt: str) -> str:
    """The file suffix of ``format=<fmt>`` in the table of forms (imported when asked)."""
    from covidxr.inference.forms import FORMS

    return FORMS[fmt].suffix if fmt in FORMS else f".{fmt}"


def register_configs() -> None:
    """Resolvers, and one ``backbone/<key>`` config per registry entry (idempotent)."""
    register_resolvers(
        {
            "study_backbones": lambda: ",".join(study_keys()),  # the paper_table sweep
            "form_suffix": _form_suffix,  # covidxr-export's default output name
        }
    )
    store = ConfigStore.instance()
    for spec in (*REGISTRY.values(), *local_specs()):  # local: the trunks covidxr-pretrain made
        store.store(group="backbone", name=spec.key, node=spec.config())


#: ``group=choice`` (also ``+group=a,b`` in a sweep): the overrides that pick a config file.
_CHOICE = re.compile(r"^\+{0,2}(?P<group>[A-Za-z_]+)=(?P<value>[A-Za-z0-9_.,:-]+)$")


def group_choices(group: str) -> list[str]:
    """The options of a config group: its YAML files, and the configs the code stores."""
    files = [p.stem for p in (CONF_DIR / group).glob("*.yaml")]
    stored = ConfigStore.instance().repo.get(group, {})
    names = [name.removesuffix(".yaml") for name in stored if isinstance(name, str)]
    return sorted({*files, *names})


def unknown_group_choice(overrides: Sequence[str]) -> str | None:
    """The first ``group=choice`` naming no option of its group, as one line, or None."""
    register_configs()
    for item in overrides:
        match = _CHOICE.match(item)
        choices = group_choices(match["group"]) if match else []
        if not choices:  # not a config group (seed=1, model.head=paper, ...)
            continue
        for value in match["value"].split(","):
            if value not in choices and value != "null":
                return (
                    f"{match['group']}={value} is not an option of {match['group']}: choose one "
                    f"of {', '.join(choices)}."
                )
    return None


def hydra_app(config_name: str) -> Callable[[Callable], Callable]:
    """``hydra.main`` on ``conf/<config_name>.yaml`` with covidxr's user errors: a config group
    choice that does not exist is one line and exit 2 (Hydra's own report exits 1), checked
    before Hydra composes anything; a user error of the task likewise."""

    def decorate(task: Callable) -> Callable:
        app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(
            report_user_errors(task)
        )

        @functools.wraps(task)
        def main(*args, **kwargs):
            if not args and not kwargs:  # a console script: the overrides are the command line
                problem = unknown_group_choice(sys.argv[1:])
                if problem:
                    exit_with_user_error(problem)
            return app(*args, **kwargs)

        return main

    return decorate
