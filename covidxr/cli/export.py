"""``covidxr-export``: a checkpoint as ONNX or TorchScript, with its preprocessing beside it.

covidxr-export ckpt_path=<run>/checkpoints/best.ckpt format=onnx output=model.onnx
covidxr-export ckpt_path=<run>/checkpoints/best.ckpt quantize=int8   # model.int8.onnx, gated
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from covidxr.cli import register_configs
from covidxr.inference.export import export
from covidxr.inference.fast import quantize_int8
from covidxr.inference.predictors import sidecar
from covidxr.paths import CONF_DIR
from covidxr.utils.errors import ConfigError, report_user_errors
from covidxr.utils.io import check_new_output
from covidxr.utils.validate import check_export


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    check_export(cfg)
    output = check_new_output(cfg.output, cfg.overwrite)
    check_new_output(sidecar(output), cfg.overwrite, option="output's .json")
    if cfg.get("quantize"):
        if cfg.quantize != "int8" or cfg.format != "onnx":
            raise ConfigError(
                f"quantize={cfg.quantize} with format={cfg.format}: quantize=int8 needs "
                "format=onnx."
            )
        path, gate = quantize_int8(
            cfg.ckpt_path,
            output,
            cfg.calib_images,
            cfg.seed,
            cfg.max_auroc_drop,
            cfg.min_agreement,
            cfg.opset,
        )
        print(f"Accuracy gate passed: {gate.describe()}")
    else:
        path = export(cfg.ckpt_path, cfg.format, output, cfg.opset)
    print(f"Wrote {path} and {sidecar(path)}")


register_configs()
if __name__ == "__main__":
    main()
