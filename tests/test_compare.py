"""Comparing runs: a tiny multirun with every logger, the report, W&B offline runs, the notebook."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import compose_config
from test_multirun import job_dirs, run_cli
from torchvision.models import resnet50

from covidxr.cli import report as report_cli
from covidxr.models.metrics import METRIC_NAMES
from covidxr.reporting.compare import write_report
from covidxr.reporting.jobs import find_jobs
from covidxr.reporting.paired_runs import paired_difference
from covidxr.utils.config import run_group
from covidxr.utils.env import wandb_offline

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_runs.ipynb"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """3 backbones x 2 seeds, one epoch, logger=many; the inat2021_sup jobs fail (wrong file)."""
    tmp = tmp_path_factory.mktemp("compare")
    weights = tmp / "resnet50.pth"
    torch.save(resnet50().state_dict(), weights)
    folder = tmp / "sweep"
    result = run_cli(
        [
            "-m",
            "experiment=smoke",
            "logger=many",
            "backbone=random,file,inat2021_sup",
            f"backbone.path={weights}",
            "seed=1,2",
            f"hydra.sweep.dir={folder}",
        ],
        data_dir,
        tmp,
    )
    assert result.returncode != 0  # two jobs failed, and Hydra says so
    assert len(job_dirs(folder)) == 6, result.stderr[-3000:]
    return folder


def test_report_has_a_row_per_backbone_and_marks_the_failed_jobs(
    sweep: Path, tmp_path: Path
) -> None:
    assert report_cli.main([str(sweep), "--output", str(tmp_path), "--wandb"]) == 0
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    by_backbone = {r["backbone"]: r for r in rows}
    assert set(by_backbone) == {"random", "file:resnet50.pth", "inat2021_sup"}
    for metric in METRIC_NAMES:
        assert {f"{metric}_mean", f"{metric}_std"} <= set(rows[0])
    assert by_backbone["random"]["runs"] == "2" and by_backbone["random"]["seeds"] == "1 2"
    assert by_backbone["inat2021_sup"]["runs"] == "0"
    assert by_backbone["inat2021_sup"]["failed"] == "2"
    assert float(by_backbone["inat2021_sup"]["paper_acc"]) == 95.66
    markdown = (tmp_path / "report.md").read_text()
    assert "2 failed" in markdown and "expected a top-level 'state_dict'" in markdown
    assert "**" in markdown  # the best value of each column in bold
    assert (tmp_path / "report.png").stat().st_size > 10_000
    tests = list(csv.DictReader((tmp_path / "paired_tests.csv").open()))
    assert {(t["metric"], t["seeds"]) for t in tests} == {
        (metric, seeds) for metric in ("auroc", "acc") for seeds in ("1", "2", "1 2")
    }  # each seed's pair, and the two combined
    combined = [t for t in tests if t["seeds"] == "1 2"]
    assert all(t["test"] == "paired t over seeds" for t in combined)
    assert "## Paired tests on shared test images" in markdown
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")  # the tables and verdicts, in W&B
    assert list(offline.glob("*.wandb"))
    (page,) = (offline / "files" / "media" / "html").glob("report/page*.html")  # the study page
    assert "covidxr study report" in page.read_text()
    failures = json.loads((tmp_path / "report.json").read_text())["sections"]["failures"]
    assert failures["data"]["cam_region"] in ("lungs", "center")  # Grad-CAM of real checkpoints
    assert (tmp_path / "report_files" / "failures.png").is_file()


def test_report_of_nothing_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert report_cli.main([str(tmp_path)]) == 2
    assert "No run folders" in capsys.readouterr().err


def test_every_logger_wrote_its_files(sweep: Path) -> None:
    done = [job for job in find_jobs([sweep]) if job.status == "ok"]
    assert len(done) == 4
    for job in done:
        assert (job.path / "csv" / "metrics.csv").is_file()
        assert list((job.path / "tensorboard").glob("events.out.tfevents.*"))
        hparams = yaml.safe_load((job.path / "csv" / "hparams.yaml").read_text())
        assert hparams["model/params/total"] > 20_000_000  # flat keys, with parameter counts
        assert hparams["optimizer/lr"] == 0.001


def test_wandb_offline_runs_hold_the_plots_and_tables(sweep: Path) -> None:
    for job in find_jobs([sweep]):
        if job.status != "ok":
            continue
        (run,) = (job.path / "wandb").glob("offline-run-*")
        tables = {
            p.name.split("_")[0] for p in (run / "files" / "media" / "table" / "test").iterdir()
        }
        assert {"roc", "pr", "predictions", "confusion", "per"} <= tables
        assert list((run / "files" / "media" / "images").rglob("confusion_matrix_image*.png"))
        (predictions,) = (run / "files" / "media" / "table" / "test").glob("predictions*.json")
        table = json.loads(predictions.read_text())
        correct = [row[table["columns"].index("correct")] for row in table["data"]]
        assert correct == sorted(correct)  # mistakes first
        assert len(correct) == 4  # the whole test split


def test_wandb_is_offline_without_an_api_key(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_offline()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert not wandb_offline()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline()


def test_run_group_outside_a_multirun_is_the_default() -> None:
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
    assert run_group("paper") == "paper"


def test_notebook_is_committed_without_outputs() -> None:
    notebook = json.loads(NOTEBOOK.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_notebook_executes_on_the_multirun(sweep: Path, monkeypatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("COVIDXR_RUNS", str(sweep))
    monkeypatch.setenv("WANDB_MODE", "offline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": os.getcwd()}}
    ).execute()
    outputs = "".join(
        output.get("text", "") + json.dumps(output.get("data", {}))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "random" in outputs and "W&B is offline" in outputs
    assert "image/png" in outputs


def test_paper_table_sweeps_the_studys_weights_from_the_registry(tmp_path, data_dir) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from covidxr.weights.registry import study_keys

    cfg = compose_config("train", ["experiment=paper_table"], tmp_path, data_dir, keep_hydra=True)
    params = cfg.hydra.sweeper.params
    assert params.backbone.split(",") == study_keys() and len(study_keys()) == 10
    assert len(str(params.seed).split(",")) >= 2
    sweep = OverridesParser.create().parse_overrides([f"backbone={params.backbone}"])[0]
    assert list(sweep.sweep_iterator()) == study_keys()  # what the basic sweeper launches


def fake_run(folder: Path, overrides: list[str], seed: int, metrics: dict[str, float]) -> None:
    """A finished job's folder as covidxr-train leaves it (config, overrides, metrics)."""
    (folder / ".hydra").mkdir(parents=True)
    config = {"seed": seed, "backbone": {"key": "random"}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
    full = {f"test/{m}": metrics.get(m, 0.5) for m in METRIC_NAMES}
    full |= {f"test/{m}_ci_low": full[f"test/{m}"] - 0.05 for m in METRIC_NAMES}
    full |= {f"test/{m}_ci_high": full[f"test/{m}"] + 0.05 for m in METRIC_NAMES}
    (folder / "metrics.json").write_text(json.dumps(full))


def test_rows_are_the_swept_settings_with_intervals_and_a_paired_verdict(tmp_path: Path) -> None:
    accuracy = {("full", 1): 0.90, ("full", 2): 0.92, ("full", 3): 0.91}
    accuracy |= {("linear_probe", 1): 0.80, ("linear_probe", 2): 0.83, ("linear_probe", 3): 0.81}
    for n, ((scheme, seed), acc) in enumerate(accuracy.items()):
        fake_run(
            tmp_path / "sweep" / str(n),
            ["experiment=smoke", f"finetune={scheme}"],
            seed,
            {"acc": acc},
        )
    rows = {r["setting"]: r for r in write_report([tmp_path / "sweep"], tmp_path)}
    assert set(rows) == {"finetune=full", "finetune=linear_probe"}  # not one "random, 6 runs" row
    full = rows["finetune=full"]
    assert full["runs"] == 3 and full["acc_mean"] == pytest.approx(91.0)
    assert full["acc_ci_low"] < 91.0 < full["acc_ci_high"]  # the t-interval over 3 seeds
    markdown = (tmp_path / "report.md").read_text()
    assert "Is `finetune=full` better?" in markdown and "| better |" in markdown
    diff = paired_difference(
        find_jobs([tmp_path / "sweep"]), "finetune=full", "finetune=linear_probe"
    )
    assert diff["pairs"] == 3 and diff["mean"] == pytest.approx(9.6667, abs=1e-3)


def test_single_runs_show_their_bootstrap_interval(tmp_path: Path) -> None:
    fake_run(tmp_path / "run", [], 1, {"acc": 0.7})
    (row,) = write_report([tmp_path / "run"], tmp_path)
    assert (row["acc_ci_low"], row["acc_ci_high"]) == pytest.approx((65.0, 75.0))
    assert "70.00 [65.0, 75.0]" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("hidden_auroc", "reading"), [(0.93, "a shortcut"), (0.52, "depends on the lungs")]
)
def test_shortcut_check_reads_the_gap(hidden_auroc: float, reading: str, tmp_path: Path) -> None:
    for n, (occlude, auroc) in enumerate((("none", 0.95), ("center", hidden_auroc))):
        fake_run(tmp_path / "s" / str(n), [f"data.occlude={occlude}"], 1, {"auroc": auroc})
    write_report([tmp_path / "s"], tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Shortcut check" in markdown and reading in markdown


def test_report_puts_internal_and_external_side_by_side(tmp_path: Path) -> None:
    fake_run(tmp_path / "r", [], 1, {"acc": 0.95})
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    (tmp_path / "r" / "metrics.json").write_text(json.dumps({**metrics, "external/acc": 0.61}))
    (row,) = write_report([tmp_path / "r"], tmp_path)
    assert row["external_acc_mean"] == pytest.approx(61.0)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Internal vs external test" in markdown and "| 95.00 | 61.00 |" in markdown


def as_job(run: Path, overrides: list[str], seed: int, data: dict | None = None) -> Path:
    """Give an in-process run the .hydra files a Hydra job folder has."""
    (run / ".hydra").mkdir(exist_ok=True)
    config = {"seed": seed, "backbone": {"key": "random"}, "data": data or {}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides, f"seed={seed}"]))
    return run


def test_paired_tests_tell_a_stronger_model_apart_and_copies_not(
    tmp_path: Path, data_dir: Path
) -> None:
    """Phantoms with a learnable marker: a trained model against a barely trained one (p < 0.05,
    "better"), and two copies of one checkpoint's predictions ("indistinguishable", p = 1)."""
    import shutil

    from covidxr.cli.train import train

    common = [
        "experiment=smoke",
        "data.shortcut=true",
        "data.per_class=80",
        "data.batch_size=16",
        "data.split_fractions=[0.6,0.1,0.3]",
    ]
    for name, lr, epochs in (("strong", "1e-3", 6), ("weak", "1e-7", 1)):
        overrides = [*common, f"optimizer.lr={lr}", f"trainer.max_epochs={epochs}"]
        train(compose_config("train", overrides, tmp_path / name, data_dir))
        as_job(tmp_path / name, [f"optimizer.lr={lr}"], 1)
    shutil.copytree(tmp_path / "strong", tmp_path / "copy", ignore=shutil.ignore_patterns("*.ckpt"))
    as_job(tmp_path / "copy", ["optimizer.lr=copy"], 1)
    write_report([tmp_path / n for n in ("strong", "weak", "copy")], tmp_path)
    tests = list(csv.DictReader((tmp_path / "paired_tests.csv").open()))
    assert list(tests[0])[:11] == [
        "setting_a", "setting_b", "metric", "test", "n_images", "difference", "ci_low",
        "ci_high", "p_value", "p_holm", "verdict",
    ]  # fmt: skip
    auroc = {r["setting_b"]: r for r in tests if r["metric"] == "auroc"}
    best = {r["setting_a"] for r in auroc.values()}
    assert best <= {"optimizer.lr=1e-3", "optimizer.lr=copy"}
    weak = auroc["optimizer.lr=1e-7"]
    assert weak["test"] == "DeLong" and int(weak["n_images"]) == 48
    assert float(weak["p_holm"]) < 0.05 and weak["verdict"] == "better"
    assert float(weak["difference"]) > 0 and float(weak["ci_low"]) > 0
    other_copy = ({"optimizer.lr=1e-3", "optimizer.lr=copy"} - best).pop()
    assert float(auroc[other_copy]["p_value"]) == 1.0
    assert auroc[other_copy]["verdict"] == "indistinguishable (p_holm >= 0.05)"
    acc = [r for r in tests if r["metric"] == "acc"]
    assert acc and all(r["test"] == "exact McNemar" for r in acc)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Paired tests on shared test images" in markdown


def test_cross_validation_folds_report_out_of_fold_and_a_corrected_interval(
    tmp_path: Path, data_dir: Path
) -> None:
    from covidxr.cli.train import train

    for fold in range(2):
        run = tmp_path / "cv" / str(fold)
        overrides = ["experiment=smoke", "data.folds=2", f"data.fold={fold}"]
        metrics = train(compose_config("train", overrides, run, data_dir))
        as_job(run, [f"data.fold={fold}", "data.folds=2"], 42, {"folds": 2, "fold": fold})
        oof = list(csv.DictReader((run / "predictions_oof.csv").open()))
        val = [r for r in csv.DictReader((run / "split.csv").open()) if r["split"] == "val"]
        assert [r["path"] for r in oof] == [r["path"] for r in val]
        assert metrics["oof/images"] == len(val) and "oof/auroc" in metrics
    tests = [
        r["path"]
        for r in csv.DictReader((tmp_path / "cv/0/split.csv").open())
        if r["split"] == "test"
    ]
    assert tests == [
        r["path"]
        for r in csv.DictReader((tmp_path / "cv/1/split.csv").open())
        if r["split"] == "test"
    ]
    (row,) = write_report([tmp_path / "cv"], tmp_path)
    assert row["cv_folds"] == 2 and row["runs"] == 2
    assert row["cv_acc_ci_low"] <= row["cv_acc_mean"] <= row["cv_acc_ci_high"]
    assert "## Cross-validation" in (tmp_path / "report.md").read_text()
