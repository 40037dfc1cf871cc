"""``covidxr-export``: a checkpoint as ONNX or TorchScript, with its preprocessing beside it.

covidxr-export ckpt_path=<run>/checkpoints/best.ckpt format=onnx output=model.onnx
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from covidxr.cli import register_configs
from covidxr.inference.export import export
from covidxr.inference.predictors import sidecar
from covidxr.paths import CONF_DIR
from covidxr.utils.errors import report_user_errors
from covidxr.utils.io import check_new_output


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    output = check_new_output(cfg.output, cfg.overwrite)
    check_new_output(sidecar(output), cfg.overwrite, option="output's .json")
    path = export(cfg.ckpt_path, cfg.format, output, cfg.opset)
    print(f"Wrote {path} and {sidecar(path)}")


register_configs()
if __name__ == "__main__":
    main()
