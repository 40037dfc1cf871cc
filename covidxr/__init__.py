"""covidxr: fine-tune ResNet50 on chest X-rays with Lightning and Hydra.

Folders by role: ``cli`` (every entry point), ``data``, ``weights`` (registry, cache, adapters),
``models``, ``inference``, ``reporting``, ``utils`` (config, runner, environment, atomic writes).
"""

from covidxr.utils.env import apply_process_defaults

apply_process_defaults()  # before albumentations is imported anywhere

__version__ = "0.1.0"
