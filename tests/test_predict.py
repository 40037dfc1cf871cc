"""Using a trained checkpoint: predict into a CSV, Grad-CAM, thresholds, exported forms."""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import compose_config

from covidxr.cli import predict as predict_app
from covidxr.cli.eval import evaluate
from covidxr.cli.train import train
from covidxr.inference import forms, gate
from covidxr.inference.inputs import batches, expand_inputs
from covidxr.inference.predictors import Predictor, TorchPredictor
from covidxr.models.module import XRayClassifier
from covidxr.models.preprocessing import Preprocessing
from covidxr.utils.errors import DatasetError
from covidxr.utils.io import read_checkpoint


def export(ckpt: Path, fmt: str, output: Path) -> Path:
    """``covidxr-export format=<fmt>`` in fp32."""
    return forms.export_form(ckpt, forms.FORMS[fmt], output)[0]


def load_predictor(path: Path) -> Predictor:
    """A model file as covidxr-predict loads it, a checkpoint in the fp32 reference."""
    return forms.load_model(path, "fp32")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    train(compose_config("train", ["experiment=smoke"], folder, data_dir))
    return folder


@pytest.fixture(scope="module")
def test_files(run: Path) -> list[Path]:
    root = Path(
        read_checkpoint(run / "checkpoints/best.ckpt")["datamodule_hyper_parameters"]["root"]
    )
    rows = list(csv.DictReader((run / "split.csv").open()))
    return [root / r["path"] for r in rows if r["split"] == "test"]


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_predict_scores_a_folder_and_reports_bad_files(
    run: Path, test_files: list[Path], tmp_path: Path, data_dir: Path
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for f in test_files:
        shutil.copy(f, folder / f.name)
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(test_files[0].read_bytes()[:50])
    (folder / "notes.txt").write_text("not an image")
    output = tmp_path / "out" / "preds.csv"
    overrides = [
        f"ckpt_path={run / 'checkpoints/best.ckpt'}",
        f"inputs=[{folder}]",
        f"output={output}",
        "cam=true",
        "num_workers=0",
    ]
    cfg = compose_config("predict", overrides, tmp_path / "out", data_dir)
    with pytest.raises(SystemExit) as exit_info:
        predict_app.main(cfg)
    assert exit_info.value.code == 1  # some files failed
    rows = {Path(r["path"]).name: r for r in read_rows(output)}
    assert len(rows) == len(test_files) + 1  # notes.txt is no image: not scored, not failed
    assert "not a decodable" in rows["corrupt.png"]["error"]
    for f in test_files:
        row = rows[f.name]
        assert row["error"] == "" and row["predicted"] in ("COVID", "Normal")
        assert float(row["p_COVID"]) + float(row["p_Normal"]) == pytest.approx(1.0, abs=1e-5)
    cams = sorted((tmp_path / "out" / "cam").glob("*.cam.png"))
    assert len(cams) == len(test_files)
    first, second = (np.asarray(__import__("cv2").imread(str(p))) for p in cams[:2])
    assert first.shape[:2] == (64, 64) and not np.array_equal(first, second)


def test_predict_agrees_with_eval(run: Path, test_files: list[Path], tmp_path: Path) -> None:
    """The predictions of covidxr-predict rebuild the confusion matrix the test run reported."""
    predictor = load_predictor(run / "checkpoints/best.ckpt")
    output = tmp_path / "preds.csv"
    assert predict_app.predict_files(predictor, test_files, output) == 0
    labels = {
        r["path"].split("/")[-1]: r["class"] for r in csv.DictReader((run / "split.csv").open())
    }
    names = ["COVID", "Normal"]
    counts = np.zeros((2, 2), int)
    for row in read_rows(output):
        counts[names.index(labels[Path(row["path"]).name]), names.index(row["predicted"])] += 1
    reported = [r[1:] for r in csv.reader((run / "confusion_matrix_test.csv").open())][1:]
    assert counts.tolist() == [[int(x) for x in r] for r in reported]


def test_expand_inputs_takes_files_folders_and_globs(
    test_files: list[Path], tmp_path: Path
) -> None:
    folder = test_files[0].parent
    found = expand_inputs([test_files[0], folder, str(folder / "*.png")])
    assert found[0] == test_files[0] and len(found) == len(set(found))
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        expand_inputs([tmp_path / "nothing-here"])


def test_threshold_from_validation_is_stored_and_used(
    run: Path, tmp_path: Path, data_dir: Path
) -> None:
    ckpt = run / "checkpoints/best.ckpt"
    cfg = compose_config(
        "eval", [f"ckpt_path={ckpt}", "target_sensitivity=1.0", "cam_samples=4"], tmp_path, data_dir
    )
    metrics = evaluate(cfg)
    threshold = metrics["val/threshold"]
    saved = tmp_path / "best.threshold.ckpt"
    assert read_checkpoint(saved)["decision_threshold"] == threshold
    assert "decision_threshold" not in read_checkpoint(ckpt)  # the original is untouched
    assert (tmp_path / "cam_grid.png").stat().st_size > 5_000
    # phantoms ship lung masks: the share of Grad-CAM energy inside them, overall and per class
    assert 0.0 <= metrics["test/cam_lungs_share"] <= 1.0
    assert {"test/cam_lungs_share/COVID", "test/cam_lungs_share/Normal"} & set(metrics)
    predictor = TorchPredictor.from_checkpoint(saved)
    assert predictor.preprocessing.threshold == threshold
    probs = np.array([[threshold, 1 - threshold], [threshold - 1e-3, 1 - threshold + 1e-3]])
    assert predictor.preprocessing.decide(probs).tolist() == [0, 1]  # COVID is label 0
    assert XRayClassifier.from_checkpoint(ckpt).preprocessing.decide(probs).tolist() == [
        int(np.argmax(probs[0])),
        int(np.argmax(probs[1])),
    ]


def test_eval_sends_the_grad_cam_grid_to_wandb(run: Path, tmp_path: Path, data_dir: Path) -> None:
    overrides = [f"ckpt_path={run / 'checkpoints/best.ckpt'}", "cam_samples=2", "logger=wandb"]
    evaluate(compose_config("eval", overrides, tmp_path, data_dir))
    (offline_run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list((offline_run / "files" / "media" / "images").rglob("grad_cam*.png"))


def test_onnx_export_matches_the_checkpoint(
    run: Path, test_files: list[Path], tmp_path: Path
) -> None:
    ckpt = run / "checkpoints/best.ckpt"
    path = export(ckpt, "onnx", tmp_path / "model.onnx")
    assert Preprocessing.read(f"{path}.json").class_names == ("COVID", "Normal")
    images = next(batches(test_files, 32))[0]
    images = torch.cat([images, images.flip(-1)])  # a batch size other than the exported one
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    from_onnx = session.run(None, {"image": images.numpy()})[0]
    from_torch = TorchPredictor.from_checkpoint(ckpt)(images)
    assert np.abs(from_onnx - from_torch).max() < 1e-4
    predictor = load_predictor(path)  # covidxr-predict accepts the ONNX file
    onnx_csv, ckpt_csv = tmp_path / "onnx.csv", tmp_path / "ckpt.csv"
    predict_app.predict_files(predictor, test_files, onnx_csv)
    predict_app.predict_files(TorchPredictor.from_checkpoint(ckpt), test_files, ckpt_csv)
    assert [r["predicted"] for r in read_rows(onnx_csv)] == [
        r["predicted"] for r in read_rows(ckpt_csv)
    ]


def test_onnx_without_its_preprocessing_file_is_refused(run: Path, tmp_path: Path) -> None:
    path = export(run / "checkpoints/best.ckpt", "onnx", tmp_path / "model.onnx")
    Path(f"{path}.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.onnx\.json is missing"):
        load_predictor(path)


def test_torch_export_program_loads_back_with_the_checkpoints_numbers(
    run: Path, test_files: list[Path], tmp_path: Path, data_dir: Path
) -> None:
    ckpt = run / "checkpoints/best.ckpt"
    path = export(ckpt, "pt2", tmp_path / "model.pt2")
    program = torch.export.load(str(path)).module()  # without covidxr's code
    images = next(batches(test_files, 32))[0]
    reference = TorchPredictor.from_checkpoint(ckpt)(images)
    with torch.no_grad():
        assert np.abs(program(images).numpy() - reference).max() < 1e-4
    predictor = load_predictor(path)  # covidxr-predict and covidxr-bench load it by its suffix
    assert np.abs(predictor(images[:1]) - reference[:1]).max() < 1e-4  # another batch size
    assert json.loads(Path(f"{path}.json").read_text())["made"]["source"] == str(ckpt.resolve())
    overrides = [f"ckpt_path={path}", "strict=true"]  # eval: the training run's test numbers
    metrics = evaluate(compose_config("eval", overrides, tmp_path / "eval", data_dir))
    recorded = json.loads((run / "metrics.json").read_text())
    assert metrics["test/auroc"] == pytest.approx(recorded["test/auroc"], abs=1e-6)
    assert metrics["test/acc"] == pytest.approx(recorded["test/acc"], abs=1e-6)
    assert (tmp_path / "eval" / "predictions_test.csv").is_file()


def test_a_format_that_cannot_be_loaded_back_is_not_offered(
    run: Path, tmp_path: Path, data_dir: Path, capsys
) -> None:
    from covidxr.cli import export as export_app

    assert set(forms.EXPORTED) == {"onnx", "pt2"}
    for fmt in forms.EXPORTED:  # every exported row has a predictor that loads it
        assert forms.form_of(f"model{forms.FORMS[fmt].suffix}") is forms.FORMS[fmt]
    overrides = [f"ckpt_path={run / 'checkpoints/best.ckpt'}", "format=torchscript"]
    with pytest.raises(SystemExit) as exit_info:
        export_app.main(compose_config("export", overrides, tmp_path / "x", data_dir))
    assert exit_info.value.code == 2
    assert "format=torchscript: choose one of onnx, pt2" in capsys.readouterr().err


def test_a_symlink_loop_in_an_input_folder_gets_a_row_and_the_rest_is_scored(
    test_files: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(test_files[0], folder / "x.png")
    (folder / "a").symlink_to("b")
    (folder / "b").symlink_to("a")
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..")  # a folder loop is not walked forever
    files = expand_inputs([folder])
    assert sorted(f.name for f in files) == ["a", "b", "x.png"]
    errors = {}
    for _, indices, errs in batches(files, 32):
        errors |= {files[i].name: e for i, e in zip(indices, errs, strict=True)}
    assert errors["x.png"] == "" and "symbolic links" in errors["a"]


def test_overlays_of_same_named_inputs_do_not_collide(tmp_path: Path) -> None:
    files = [tmp_path / "a" / "scan.png", tmp_path / "b" / "scan.png", tmp_path / "b" / "c.png"]
    cam = tmp_path / "out" / "cam"
    assert predict_app.cam_paths(files, cam) == [
        cam / "a" / "scan.cam.png",
        cam / "b" / "scan.cam.png",
        cam / "b" / "c.cam.png",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["threshold=1.5"], "threshold=1.5: give a probability in [0, 1]"),
        (["inputs=[{empty}]"], "holds no images"),
        (["device=gpu0"], "device=gpu0: give cpu"),
    ],
)
def test_predict_refuses_bad_thresholds_and_empty_inputs(
    overrides: list[str], message: str, run: Path, tmp_path: Path, data_dir: Path, capsys
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    given = [o.format(empty=empty) for o in overrides]
    defaults = [f"ckpt_path={run / 'checkpoints/best.ckpt'}", f"inputs=[{run}]"]
    cfg = compose_config("predict", [*defaults, *given], tmp_path, data_dir)
    with pytest.raises(SystemExit) as exit_info:
        predict_app.main(cfg)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "predictions.csv").exists()


def test_eval_scores_an_external_dataset_beside_the_internal_test(
    run: Path, tmp_path: Path, data_dir: Path
) -> None:
    """Another set in the flat layout, with a class the model does not know (left out)."""
    from covidxr.data.phantoms.synthetic import generate_phantoms

    other = generate_phantoms(
        tmp_path / "made", per_class=6, classes=("COVID", "Normal", "Lung_Opacity"), size=64, seed=7
    )
    flat = tmp_path / "external"
    for folder in other.iterdir():
        if folder.is_dir():
            shutil.copytree(folder / "images", flat / folder.name.upper())  # COVID/, NORMAL/, ...
    overrides = [f"ckpt_path={run / 'checkpoints/best.ckpt'}", f"external={flat}"]
    metrics = evaluate(compose_config("eval", overrides, tmp_path / "eval", data_dir))
    assert "test/acc" in metrics and "external/acc" in metrics and "external/acc_ci_low" in metrics
    rows = read_rows(tmp_path / "eval" / "predictions_external.csv")
    assert len(rows) == 12  # Lung_Opacity is not the model's: left out
    folders = {"COVID": "0", "NORMAL": "1"}  # the model's label order
    assert all(r["label"] == folders[r["path"].split("/")[0]] for r in rows)
    assert all((flat / r["path"]).is_file() for r in rows)
    assert (tmp_path / "eval" / "confusion_matrix_external.csv").is_file()
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["external/acc"] == metrics["external/acc"] and "test/acc" in saved


def test_energy_share_is_the_part_of_the_map_inside_the_region() -> None:
    from covidxr.inference.gradcam import energy_share

    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, :2] = 1.0  # all in the top half
    maps[1] = 1.0  # everywhere
    region = np.zeros((2, 4, 4), np.float32)
    region[:, :2] = 1.0
    assert energy_share(maps, region).tolist() == [1.0, 0.5]


def damaged_checkpoint(kind: str, good: Path, folder: Path) -> Path:
    """A file a user might pass as a checkpoint: cut short, another kind of file, a foreign zip."""
    path = folder / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    else:
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "not a checkpoint")
    return path


@pytest.mark.parametrize("kind", ["truncated", "png", "foreign_zip"])
@pytest.mark.parametrize("app", ["predict", "eval", "export", "train"])
def test_a_damaged_checkpoint_is_one_line_in_every_entry_point(
    kind: str, app: str, run: Path, test_files: list[Path], tmp_path: Path, data_dir: Path, capsys
) -> None:
    import importlib

    bad = damaged_checkpoint(kind, run / "checkpoints" / "best.ckpt", tmp_path / "bad")
    overrides = {
        "predict": [f"inputs=[{test_files[0]}]", f"output={tmp_path / 'p.csv'}"],
        "eval": [],
        "export": [f"output={tmp_path / 'm.onnx'}"],
        "train": ["experiment=smoke"],
    }[app]
    name = "train" if app == "train" else app
    cfg = compose_config(name, [f"ckpt_path={bad}", *overrides], tmp_path / "out", data_dir)
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"covidxr.cli.{app}").main(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and str(bad) in err[-1]
    assert "weights_only=False" not in err[-1]
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "m.onnx").exists()


def test_damaged_or_mismatched_onnx_sidecars_are_one_line(run: Path, tmp_path: Path) -> None:
    """A truncated ONNX file, a truncated sidecar, and a sidecar naming more classes than the
    model outputs (its CSV would have a column too many)."""
    from covidxr.utils.errors import UserError

    path = export(run / "checkpoints/best.ckpt", "onnx", tmp_path / "model.onnx")
    sidecar_text = Path(f"{path}.json").read_text()
    Path(f"{path}.json").write_text(sidecar_text.replace('"Normal"', '"Normal", "Lung_Opacity"'))
    with pytest.raises(UserError, match=r"names 3 classes .* outputs 2 probabilities"):
        load_predictor(path)
    Path(f"{path}.json").write_text(sidecar_text[:40])
    with pytest.raises(UserError, match=r"model\.onnx\.json is not a preprocessing file"):
        load_predictor(path)
    Path(f"{path}.json").write_text(sidecar_text)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match=r"not an ONNX model ONNX Runtime can load"):
        load_predictor(path)


def test_predict_never_writes_over_what_a_user_has(
    run: Path, test_files: list[Path], tmp_path: Path, data_dir: Path, capsys
) -> None:
    """Existing outputs, the inputs themselves, folders and unwritable places are refused before
    any scoring; output inside the input folder, run again with overwrite=true, does not score
    its own CSV and overlays."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for f in test_files:
        shutil.copy(f, folder / f.name)
    (folder / "Thumbs.db").write_bytes(b"\0" * 16)
    (tmp_path / "a_file").write_text("x")
    ckpt = f"ckpt_path={run / 'checkpoints/best.ckpt'}"

    def predict(*overrides: str) -> int:
        cfg = compose_config("predict", [ckpt, f"inputs=[{folder}]", "cam=true", *overrides],
                             tmp_path / "run", data_dir)  # fmt: skip
        try:
            predict_app.main(cfg)
        except SystemExit as exc:
            return int(exc.code)
        return 0

    inside = folder / "preds.csv"
    assert predict(f"output={inside}") == 0
    first = read_rows(inside)
    assert len(first) == len(test_files)  # Thumbs.db is no image
    assert predict(f"output={inside}") == 2
    assert "exists" in capsys.readouterr().err.strip().splitlines()[-1]
    assert predict(f"output={inside}", "overwrite=true") == 0
    assert read_rows(inside) == first  # its own CSV and overlays were not scored
    assert not (folder / "cam" / "cam").exists()
    original = test_files[0].name
    for output, message in [
        (folder / original, "exists"),
        (folder, "is a folder"),
        (tmp_path / "a_file" / "preds.csv", "cannot write in"),
    ]:
        before = (folder / original).read_bytes()
        assert predict(f"output={output}", "cam=false") == 2
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
        assert (folder / original).read_bytes() == before
    assert predict(f"output={folder / original}", "cam=false", "overwrite=true") == 2
    assert "is one of the inputs" in capsys.readouterr().err


def test_export_does_not_replace_an_earlier_model_unasked(
    run: Path, tmp_path: Path, data_dir: Path, capsys
) -> None:
    from covidxr.cli import export as export_app

    output = tmp_path / "model.onnx"
    overrides = [f"ckpt_path={run / 'checkpoints/best.ckpt'}", f"output={output}"]
    export_app.main(compose_config("export", overrides, tmp_path / "a", data_dir))
    before = output.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        export_app.main(compose_config("export", overrides, tmp_path / "b", data_dir))
    assert exit_info.value.code == 2 and "exists" in capsys.readouterr().err
    assert output.read_bytes() == before
    cfg = compose_config("export", [*overrides, "overwrite=true"], tmp_path / "c", data_dir)
    export_app.main(cfg)
    assert load_predictor(output).preprocessing.class_names == ("COVID", "Normal")


def test_external_sets_report_undefined_metrics_and_what_they_left_out(
    run: Path, tmp_path: Path, data_dir: Path, caplog
) -> None:
    """A set of one class has no specificity or AUROC (n/a, not 0.0); folders that are not the
    model's classes are named in a warning, and external_map brings them in."""
    from covidxr.data.phantoms.synthetic import generate_phantoms

    made = generate_phantoms(tmp_path / "made", per_class=4, classes=("COVID", "Normal"), size=64)
    only_covid = tmp_path / "only_covid"
    shutil.copytree(made / "COVID" / "images", only_covid / "COVID")
    kaggle_style = tmp_path / "kaggle_style"  # PNEUMONIA / NORMAL, as other public sets ship
    shutil.copytree(made / "COVID" / "images", kaggle_style / "PNEUMONIA")
    shutil.copytree(made / "Normal" / "images", kaggle_style / "NORMAL")
    ckpt = f"ckpt_path={run / 'checkpoints/best.ckpt'}"
    one = evaluate(
        compose_config("eval", [ckpt, f"external={only_covid}"], tmp_path / "one", data_dir)
    )
    assert np.isnan(one["external/specificity"]) and np.isnan(one["external/auroc"])
    assert 0.0 <= one["external/sensitivity"] <= 1.0
    saved = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert np.isnan(saved["external/auroc"])
    with caplog.at_level("WARNING"):
        left = evaluate(
            compose_config("eval", [ckpt, f"external={kaggle_style}"], tmp_path / "two", data_dir)
        )
    assert "left out ['PNEUMONIA']" in caplog.text
    assert len(read_rows(tmp_path / "two" / "predictions_external.csv")) == 4
    assert np.isnan(left["external/sensitivity"])  # no COVID image was used
    mapped = [ckpt, f"external={kaggle_style}", "+external_map.PNEUMONIA=COVID"]
    both = evaluate(compose_config("eval", mapped, tmp_path / "three", data_dir))
    assert len(read_rows(tmp_path / "three" / "predictions_external.csv")) == 8
    assert 0.0 <= both["external/auroc"] <= 1.0
    missing = tmp_path / "not-there"
    with pytest.raises(DatasetError, match=rf"external={missing} does not exist") as err:
        evaluate(compose_config("eval", [ckpt, f"external={missing}"], tmp_path / "4", data_dir))
    assert "kaggle" not in str(err.value).lower()  # the advice fits an external set


def test_predict_scores_an_xray_alike_in_every_form_it_ships_in(
    run: Path, test_files: list[Path], tmp_path: Path
) -> None:
    """A PNG, its DICOM (12-bit, MONOCHROME1, rescaled, windowed; no extension), its 12-bit PNG;
    and a JPEG stored turned with an EXIF orientation against the same JPEG stored upright."""
    import PIL.Image
    from test_dicom import write_12bit_png

    from covidxr.data.formats.decode import read_gray
    from covidxr.data.formats.dicom import write_dicom

    forms: dict[str, Path] = {}
    for i, source in enumerate(test_files[:4]):
        gray = read_gray(source)
        forms[f"{i}:png"] = shutil.copy(source, tmp_path / f"{i}.png")
        forms[f"{i}:dicom"] = tmp_path / f"{i}-1.2.840.99"
        write_dicom(
            forms[f"{i}:dicom"], gray, bits_stored=12, monochrome1=True, rescale=(0.5, -100)
        )
        for convention in ("scaled", "raw", "bare"):  # the PNG rule, raw with sBIT, no sBIT
            forms[f"{i}:png12{convention}"] = write_12bit_png(
                tmp_path / f"{i}-12bit-{convention}.png", gray, convention
            )
        forms[f"{i}:jpeg"] = tmp_path / f"{i}.jpg"
        PIL.Image.fromarray(gray).save(forms[f"{i}:jpeg"], quality=100)
        exif = PIL.Image.Exif()
        exif[0x0112] = 6  # stored turned left; shown turned 90 degrees clockwise
        forms[f"{i}:exif"] = tmp_path / f"{i}-exif.jpg"
        PIL.Image.fromarray(np.rot90(gray, 1)).save(forms[f"{i}:exif"], quality=100, exif=exif)
    output = tmp_path / "preds.csv"
    predictor = load_predictor(run / "checkpoints/best.ckpt")
    assert predict_app.predict_files(predictor, list(forms.values()), output) == 0
    by_path = {row["path"]: float(row["p_COVID"]) for row in read_rows(output)}
    p = {form: by_path[str(path)] for form, path in forms.items()}
    for i in range(4):
        assert p[f"{i}:dicom"] == pytest.approx(p[f"{i}:png"], abs=0.01)
        for convention in ("scaled", "raw", "bare"):
            assert p[f"{i}:png12{convention}"] == pytest.approx(p[f"{i}:png"], abs=0.01)
        assert p[f"{i}:exif"] == pytest.approx(p[f"{i}:jpeg"], abs=0.01)


def test_ensemble_of_copies_equals_its_member_and_refuses_other_splits(
    run: Path, tmp_path: Path, data_dir: Path
) -> None:
    from covidxr.utils.errors import ConfigError

    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("wandb", "csv", "tensorboard"))
    single = evaluate(
        compose_config(
            "eval", [f"ckpt_path={run / 'checkpoints/best.ckpt'}"], tmp_path / "one", data_dir
        )
    )
    members = f"ensemble=[{run / 'checkpoints/best.ckpt'},{copy}]"
    metrics = evaluate(compose_config("eval", [members], tmp_path / "ens", data_dir))
    for key in ("test/acc", "test/auroc", "test/sensitivity"):
        assert metrics[key] == pytest.approx(single[key], abs=1e-6, nan_ok=True)
    assert metrics["test/auroc_vs_best_member_p"] == 1.0
    assert metrics["ensemble/members"] == 2.0
    assert len(read_rows(tmp_path / "ens" / "ensemble_members.csv")) == 2
    assert read_rows(tmp_path / "ens" / "predictions_test.csv") == read_rows(
        run / "predictions_test.csv"
    )
    rows = read_rows(copy / "split.csv")
    moved = next(r for r in rows if r["split"] == "test")
    moved["split"] = "train"
    with (copy / "split.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ConfigError, match="tested on other images"):
        evaluate(compose_config("eval", [members], tmp_path / "bad", data_dir))


def test_ensemble_members_of_other_image_sizes_are_each_scored_at_their_own(
    run: Path, tmp_path: Path, data_dir: Path
) -> None:
    # The same weights recorded as a 48 px model (the backbone pools globally): its probabilities
    # inside the ensemble must be those it gives alone, at 48 px, not at the first member's 32.
    wide = tmp_path / "wide"
    shutil.copytree(run, wide, ignore=shutil.ignore_patterns("wandb", "csv", "tensorboard"))
    ckpt = torch.load(wide / "checkpoints/best.ckpt", weights_only=True, map_location="cpu")
    ckpt["hyper_parameters"]["image_size"] = 48
    ckpt["datamodule_hyper_parameters"]["image_size"] = 48
    torch.save(ckpt, wide / "checkpoints/best.ckpt")

    def alone(ckpt_path: Path, name: str) -> np.ndarray:
        evaluate(compose_config("eval", [f"ckpt_path={ckpt_path}"], tmp_path / name, data_dir))
        return np.array(
            [float(r["p_COVID"]) for r in read_rows(tmp_path / name / "predictions_test.csv")]
        )

    p_narrow = alone(run / "checkpoints/best.ckpt", "narrow")
    p_wide = alone(wide / "checkpoints/best.ckpt", "wide_eval")
    assert not np.allclose(p_narrow, p_wide, atol=1e-4)  # the size matters to this model
    members = f"ensemble=[{run / 'checkpoints/best.ckpt'},{wide / 'checkpoints/best.ckpt'}]"
    evaluate(compose_config("eval", [members], tmp_path / "ens", data_dir))
    p_ensemble = [float(r["p_COVID"]) for r in read_rows(tmp_path / "ens" / "predictions_test.csv")]
    assert p_ensemble == pytest.approx((p_narrow + p_wide) / 2, abs=1e-5)


def test_test_time_views_average_probabilities(
    run: Path, test_files: list[Path], tmp_path: Path, data_dir: Path
) -> None:
    from covidxr.models.tta import resolve_views
    from covidxr.utils.errors import ConfigError

    predictor = load_predictor(run / "checkpoints/best.ckpt")
    plain, same, views = tmp_path / "plain.csv", tmp_path / "same.csv", tmp_path / "views.csv"
    predict_app.predict_files(predictor, test_files, plain)
    predict_app.predict_files(predictor, test_files, same, tta=resolve_views([[0, 0, 1]]))
    predict_app.predict_files(predictor, test_files, views, tta=resolve_views("shifts"))
    assert read_rows(plain) == read_rows(same)
    p_plain = [float(r["p_COVID"]) for r in read_rows(plain)]
    p_views = [float(r["p_COVID"]) for r in read_rows(views)]
    assert p_plain != p_views
    assert all(
        float(r["p_COVID"]) + float(r["p_Normal"]) == pytest.approx(1, abs=1e-5)
        for r in read_rows(views)
    )
    ckpt = f"ckpt_path={run / 'checkpoints/best.ckpt'}"
    metrics = evaluate(compose_config("eval", [ckpt, "tta=shifts"], tmp_path / "e", data_dir))
    recorded = [float(r["p_COVID"]) for r in read_rows(tmp_path / "e" / "predictions_test.csv")]
    # eval (normalised) and predict (raw) see the same views, to uint8 rounding
    assert recorded == pytest.approx(p_views, abs=2e-3)
    assert 0 <= metrics["test/acc"] <= 1
    with pytest.raises(ConfigError, match="tta=flips"):
        resolve_views("flips")


def test_int8_export_passes_the_gate_records_it_and_predicts_alike(
    run: Path, test_files: list[Path], tmp_path: Path, data_dir: Path
) -> None:
    from covidxr.cli import export as export_app

    output = tmp_path / "model.int8.onnx"
    # The smoke model's 4 test probabilities lie near 0.5, where int8 noise flips a label (1 of 4
    # with the current exporter's graph, 0 with the legacy one; on 216 images of a dev-set model
    # the two graphs agree with fp32 on 98.1% and 99.1% of labels, mean |dp| 0.016 both): the
    # label limit is lowered here, and on 4 images one swapped pair moves AUROC by 0.25 (the
    # fixture's model ties, so its AUROC flips with the thread count); the refusal is tested below.
    overrides = [
        f"ckpt_path={run / 'checkpoints/best.ckpt'}",
        "quantize=int8",
        f"output={output}",
        "min_agreement=0.5",
        "max_auroc_change=0.3",
    ]
    export_app.main(compose_config("export", overrides, tmp_path / "x", data_dir))
    record = json.loads(Path(f"{output}.json").read_text())
    assert record["gate"]["passed"] and record["gate"]["form"] == "int8"
    assert record["gate"]["images"] == len(test_files)
    assert {"test/auroc", "test/acc"} <= set(record["gate"]["reference"])
    assert record["made"]["calibration_images"] > 0
    assert Preprocessing.read(f"{output}.json").class_names == ("COVID", "Normal")
    int8, fp32 = tmp_path / "int8.csv", tmp_path / "fp32.csv"
    predict_app.predict_files(load_predictor(output), test_files, int8)
    predict_app.predict_files(
        TorchPredictor.from_checkpoint(run / "checkpoints/best.ckpt"), test_files, fp32
    )
    for a, b in zip(read_rows(int8), read_rows(fp32), strict=True):
        assert float(a["p_COVID"]) == pytest.approx(float(b["p_COVID"]), abs=0.05)


def test_a_model_that_fails_the_gate_is_refused_and_nothing_is_left(
    run: Path, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from covidxr.cli import export as export_app

    def losing(*args, **kwargs):
        result = real_gate(*args, **kwargs)
        return dataclasses.replace(result, auroc_change=-0.02, agreement=0.95)

    real_gate = forms.compare_forms
    monkeypatch.setattr(forms, "compare_forms", losing)
    folder = tmp_path / "out"
    folder.mkdir()
    overrides = [
        f"ckpt_path={run / 'checkpoints/best.ckpt'}",
        "quantize=int8",
        f"output={folder / 'm.onnx'}",
    ]
    with pytest.raises(SystemExit) as exit_info:
        export_app.main(compose_config("export", overrides, tmp_path / "x", data_dir))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lost accuracy" in err[0] and "change -0.0200" in err[0]
    assert list(folder.iterdir()) == []  # no model, no JSON, no temporary folder


def test_checkpoints_run_in_the_fastest_form_that_passed_the_gate_here(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from covidxr.utils.env import cpu_flags

    monkeypatch.setenv("COVIDXR_GATE_DIR", str(tmp_path / "gates"))
    # The choice is tested, not the gate's limits: on the fixture's 4 test images, near 0.5, one
    # swapped pair is an AUROC change of 0.25 (and depends on the thread count).
    loose = gate.GateLimits(max_auroc_change=0.3, min_agreement=0.5)
    monkeypatch.setattr(gate, "compare_forms", functools.partial(gate.compare_forms, limits=loose))
    ckpt = run / "checkpoints/best.ckpt"
    assert forms.checkpoint_predictor(ckpt, "fp32").form == "fp32"
    native = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    chosen = forms.checkpoint_predictor(ckpt, "auto")
    assert chosen.form == ("bf16" if native else "fp32_cl")
    if not native:
        return
    (record,) = (tmp_path / "gates").glob("*.json")
    assert json.loads(record.read_text())[gate.machine_key()]["passed"]
    monkeypatch.setattr(gate, "probabilities", lambda *a, **k: pytest.fail("the gate ran again"))
    assert forms.checkpoint_predictor(ckpt, "auto").form == "bf16"  # read from the record
    data = json.loads(record.read_text())
    data[gate.machine_key()] |= {"auroc_change": -0.5}
    record.write_text(json.dumps(data))
    assert forms.checkpoint_predictor(ckpt, "auto").form == "fp32_cl"
    with pytest.raises(gate.GateError, match="lost accuracy"):
        forms.checkpoint_predictor(ckpt, "bf16")
