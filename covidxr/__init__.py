"""covidxr: fine-tune ResNet50 on chest X-rays with Lightning and Hydra."""

__version__ = "0.1.0"
