"""``covidxr-export``: a checkpoint as an exported file (``format=``: a row of the table of forms,
``covidxr.inference.forms``), with its preprocessing and how it was made beside it.

covidxr-export ckpt_path=<run>/checkpoints/best.ckpt format=onnx output=model.onnx
covidxr-export ckpt_path=<run>/checkpoints/best.ckpt format=pt2      # torch.export program
covidxr-export ckpt_path=<run>/checkpoints/best.ckpt quantize=int8   # model.int8.onnx, gated
"""

from __future__ import annotations

from omegaconf import DictConfig

from covidxr.cli import hydra_app, register_configs
from covidxr.inference.forms import check_export_options, export_form
from covidxr.inference.gate import GateLimits
from covidxr.inference.options import check_export
from covidxr.inference.predictors import sidecar
from covidxr.utils.io import check_new_output


@hydra_app("export")
def main(cfg: DictConfig) -> None:
    check_export(cfg)
    form = check_export_options(cfg.format, cfg.get("quantize"))
    output = check_new_output(cfg.output, cfg.overwrite)
    check_new_output(sidecar(output), cfg.overwrite, option="output's .json")
    path, gate = export_form(
        cfg.ckpt_path,
        form,
        output,
        cfg.get("quantize") or "fp32",
        cfg.calib_images,
        cfg.seed,
        GateLimits(cfg.max_auroc_change, cfg.min_agreement, cfg.max_prob_change),
        cfg.opset,
    )
    if gate is not None:
        print(f"Accuracy gate passed: {gate.describe()}")
    print(f"Wrote {path} and {sidecar(path)}")


register_configs()
if __name__ == "__main__":
    main()
