"""``covidxr-bench``: throughput figures for humans (``make bench``); tests never time things.

``covidxr-bench data`` measures images/s of the input pipeline (decode + augment + collate) beside
a torchvision ``ImageFolder`` + PIL baseline reading the same files, with 0 and 2 workers.
``covidxr-bench train`` measures training images/s through the Lightning Trainer beside a plain
PyTorch loop on the same model, batches and threads; ``covidxr-bench pretrain`` does the same for
MoCo v2 pretraining against lightly's plain loop. ``covidxr-bench gpu`` measures the GPU path:
training images/s at 224 px in fp32, bf16 mixed precision, bf16 + channels_last and + compile,
the share of step time spent waiting for data with 4/8/16 workers, and peak memory.
``covidxr-bench predict --ckpt <run>/checkpoints/best.ckpt`` measures inference images/s on the
CPU for every path (torch eager fp32, channels-last fp32 and bf16, ONNX Runtime fp32 and int8),
model alone and end to end, with the accuracy gate's numbers; a table and JSON.
``covidxr-bench recipe`` trains covidxr's defaults and a plain torchvision loop per seed on the
dev set less a held-out part, and scores both on it: AUROC, accuracy, wall time, the paired
difference over seeds.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from covidxr.benchmarks.inference import bench_predict
from covidxr.benchmarks.pipeline import bench_data
from covidxr.benchmarks.pretraining import bench_pretrain
from covidxr.benchmarks.recipe import bench_recipe
from covidxr.benchmarks.training import bench_gpu, bench_train
from covidxr.data.loading.options import MIN_IMAGE_SIZE


def at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (a bad value is argparse's one line, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text}: give an integer >= {minimum}")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covidxr-bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_data = sub.add_parser("data", help="input pipeline images/s against ImageFolder + PIL")
    p_data.add_argument("--root", type=Path, default=None, help="dataset (default: real set)")
    p_data.add_argument("--images", type=at_least(1), default=1024, help="images to read (1024)")
    p_data.add_argument("--image-size", type=at_least(MIN_IMAGE_SIZE), default=224)
    p_data.add_argument("--batch-size", type=at_least(1), default=32)
    p_train = sub.add_parser("train", help="Trainer images/s against a plain PyTorch loop")
    p_train.add_argument("--image-size", type=at_least(MIN_IMAGE_SIZE), default=64)
    p_train.add_argument("--batch-size", type=at_least(1), default=16)
    p_train.add_argument("--steps", type=at_least(1), default=12, help="timed steps per round (12)")
    p_train.add_argument("--rounds", type=at_least(1), default=2, help="interleaved rounds (2)")
    p_pretrain = sub.add_parser("pretrain", help="MoCo v2 images/s against a plain lightly loop")
    p_pretrain.add_argument("--image-size", type=at_least(MIN_IMAGE_SIZE), default=64)
    p_pretrain.add_argument("--batch-size", type=at_least(2), default=32)
    p_pretrain.add_argument("--steps", type=at_least(1), default=10, help="timed steps (10)")
    p_pretrain.add_argument("--rounds", type=at_least(1), default=2, help="interleaved rounds (2)")
    p_gpu = sub.add_parser("gpu", help="GPU training images/s, data wait and memory (CUDA)")
    p_gpu.add_argument("--root", type=Path, default=None, help="real data for the loader rows")
    p_gpu.add_argument("--batch-size", type=at_least(1), default=256)
    p_gpu.add_argument("--steps", type=at_least(1), default=30, help="timed steps per setting (30)")
    p_predict = sub.add_parser("predict", help="CPU inference images/s per path, and the gate")
    p_predict.add_argument(
        "--ckpt",
        type=Path,
        default=None,
        help="a trained checkpoint (its "
        "run's test images; default: a random model on the real set)",
    )
    p_predict.add_argument("--images", type=at_least(1), default=256, help="images scored (256)")
    p_predict.add_argument(
        "--image-size", type=at_least(MIN_IMAGE_SIZE), default=224, help="without --ckpt (224)"
    )
    p_predict.add_argument("--batch-size", type=at_least(1), default=16)
    p_predict.add_argument("--workers", type=at_least(0), default=2, help="decoding processes (2)")
    p_predict.add_argument("--output", type=Path, default=Path("logs/bench_predict.json"))
    p_recipe = sub.add_parser("recipe", help="covidxr's defaults against a plain loop, held out")
    p_recipe.add_argument("--root", type=Path, default=None, help="dev set (default: real set)")
    p_recipe.add_argument("--seeds", type=at_least(1), default=3, help="seeds 1..N (3)")
    p_recipe.add_argument("--epochs", type=at_least(1), default=3)
    p_recipe.add_argument("--image-size", type=at_least(MIN_IMAGE_SIZE), default=64)
    p_recipe.add_argument("--held-out", type=at_least(2), default=600, help="X-rays held out (600)")
    p_recipe.add_argument("--output", type=Path, default=Path("logs/bench_recipe.json"))
    p_recipe.add_argument(
        "--loop-from",
        type=Path,
        default=None,
        help="reuse the plain loop's rows of an earlier --output (same budget)",
    )
    p_recipe.add_argument(
        "overrides",
        nargs="*",
        help="covidxr-train overrides: a candidate recipe (e.g. augment=none)",
    )
    args = parser.parse_args(argv)
    console = Console()
    if args.command == "recipe":
        seeds = range(1, args.seeds + 1)
        bench_recipe(args.root, seeds, args.epochs, args.image_size, args.held_out, args.output,
                     console, args.overrides, args.loop_from)  # fmt: skip
        return 0
    if args.command == "predict":
        bench_predict(
            args.ckpt,
            args.images,
            args.image_size,
            args.batch_size,
            args.workers,
            args.output,
            console,
        )
        return 0
    if args.command == "pretrain":
        bench_pretrain(args.image_size, args.batch_size, args.steps, args.rounds, console)
        return 0
    if args.command == "gpu":
        return bench_gpu(args.root, args.batch_size, args.steps, console)
    if args.command == "data":
        bench_data(args.root, args.images, args.image_size, args.batch_size, console)
    else:
        bench_train(args.image_size, args.batch_size, args.steps, args.rounds, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
