"""No patient identifier in a run folder, whatever the options.

Every option a run is given is recorded: Hydra's ``.hydra/*.yaml``, ``job.json``, the CSV log's
``hparams.yaml``, both checkpoints and the W&B config. Groups held out by a patient key
(``data.group_by=PatientID``, a manifest's ``patient`` column) are therefore accepted only as the
pseudonyms ``split.csv`` records (``PatientID:<16 hex digits>``) or as ``@<file>`` of values,
whose contents are read at split time and never recorded. Sites and sources are not identifiers
and are given as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from covidxr.utils.errors import exit_with_user_error

#: DICOM keywords (and manifest column names, lower-cased, containing one of PATIENT_WORDS) whose
#: values identify a person or a study of one
PATIENT_KEYWORDS = frozenset(
    {
        "PatientID",
        "PatientName",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "AccessionNumber",
        "StudyID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    }
)
PATIENT_WORDS = ("patient", "subject", "mrn", "person", "accession", "study")
#: hex digits of the HMAC a pseudonym keeps (``groups.pseudonym``)
PSEUDONYM_DIGITS = 16


def identifies_patients(key: str) -> bool:
    """Whether values of the group key ``key`` identify patients (to be pseudonymised)."""
    return key in PATIENT_KEYWORDS or any(word in key.lower() for word in PATIENT_WORDS)


def raw_entries(key: str, entries: Iterable[Any]) -> int:
    """How many of ``entries`` (held-out groups) are raw values of a patient key ``key``: not a
    pseudonym ``<key>:<hex>`` and not an ``@<file>``."""
    if not identifies_patients(key):
        return 0
    pseudonym = re.compile(rf"{re.escape(key)}:[0-9a-f]{{{PSEUDONYM_DIGITS}}}")
    return sum(1 for e in entries if not (str(e).startswith("@") or pseudonym.fullmatch(str(e))))


def _override_values(overrides: Iterable[str], name: str) -> list[str]:
    """The entries of every value that the command-line ``overrides`` give option ``name``
    (sweeps included: ``data.test_groups=[a,b],[c]``)."""
    found = []
    for override in overrides:
        option, _, value = override.lstrip("+~").partition("=")
        if option == name:
            found += [v.strip(" '\"") for v in re.split(r"[\[\],]", value) if v.strip(" '\"")]
    return found


def recorded_identifiers(config: DictConfig) -> str | None:
    """Why ``config`` would record patient identifiers, or None (checked before Hydra writes)."""
    key = str(OmegaConf.select(config, "data.group_by", default="none"))
    given = list(OmegaConf.select(config, "data.test_groups", default=None) or [])
    given += _override_values(config.hydra.overrides.task, "data.test_groups")
    if not raw_entries(key, given):
        return None
    return (
        f"data.test_groups: {key} values identify patients, and every option is recorded in the "
        f"run folder (.hydra/, job.json, checkpoints, W&B): give their pseudonyms as split.csv "
        f"shows them ({key}:<{PSEUDONYM_DIGITS} hex digits>), or a file of the values, "
        "data.test_groups=[@file]."
    )


class NoRecordedIdentifiers(HydraCallback):
    """Refuse options that would write patient identifiers into run folders, before any is
    written (one run or a whole sweep)."""

    def _check(self, config: DictConfig) -> None:
        problem = recorded_identifiers(config)
        if problem is not None:
            exit_with_user_error(problem)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)
