"""The study page: its formulas against independent ones, its sections from a 2-setting x 2-seed
sweep with an external evaluation and a site column, no patient identifier in any file, and the
page itself opened in a real browser (headless Chromium) with nothing fetched from a network."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_png

from covidxr.reporting.compare import write_report
from covidxr.reporting.study.clinical import net_benefit, operating_point, predictive_values
from covidxr.reporting.study.subgroups import subgroup_table

CLASSES = ("COVID", "Normal")
PATIENTS = [f"PAT-{i:04d}-SECRET" for i in range(40)]


def test_ppv_npv_and_net_benefit_match_the_counting_formulas() -> None:
    rng = np.random.default_rng(1)
    positive = rng.random(500) < 0.3
    scores = np.clip(positive * 0.35 + rng.random(500) * 0.65, 0, 1)
    point = operating_point(scores, positive, 0.5, prevalence=0.05)
    tp = ((scores >= 0.5) & positive).sum()
    fp = ((scores >= 0.5) & ~positive).sum()
    sens, spec = tp / positive.sum(), 1 - fp / (~positive).sum()
    assert point.sensitivity == pytest.approx(sens) and point.specificity == pytest.approx(spec)
    # Bayes at 5%: of 10,000 people, 500 diseased
    assert point.ppv == pytest.approx(500 * sens / (500 * sens + 9500 * (1 - spec)))
    assert point.npv == pytest.approx(9500 * spec / (9500 * spec + 500 * (1 - sens)))
    assert predictive_values(1.0, 1.0, 0.5) == (1.0, 1.0)
    low, high = point.sensitivity_ci  # Wilson, against statsmodels
    from statsmodels.stats.proportion import proportion_confint

    expected = proportion_confint(tp, positive.sum(), method="wilson")
    assert (low, high) == pytest.approx(expected)
    # At the sample's own prevalence, net benefit is TP/N - FP/N * pt / (1 - pt) (Vickers)
    thresholds = np.array([0.1, 0.3, 0.5])
    curve = net_benefit(scores, positive, thresholds, prevalence=positive.mean())
    for pt, nb in zip(thresholds, curve["model"], strict=True):
        tp_t, fp_t = ((scores >= pt) & positive).sum(), ((scores >= pt) & ~positive).sum()
        assert nb == pytest.approx(tp_t / 500 - fp_t / 500 * pt / (1 - pt))
    assert curve["treat_all"][0] == pytest.approx(positive.mean() - (1 - positive.mean()) / 9)


def test_subgroups_flag_the_group_that_differs_and_leave_small_ones_out() -> None:
    """Sites A and B right on 90% of their images, site D on 30%, site C too small to judge."""
    values, targets, right = [], [], []
    for site, per_class, share in (("A", 100, 0.9), ("B", 100, 0.9), ("D", 10, 0.3),
                                   ("C", 4, 1.0)):  # fmt: skip
        for label in (0, 1):
            values += [site] * per_class
            targets += [label] * per_class
            right += [k < share * per_class for k in range(per_class)]
    targets, right = np.array(targets), np.array(right)
    p_true = np.where(right, 0.8, 0.2)
    probs = np.where(targets[:, None] == np.arange(2), p_true[:, None], 1 - p_true[:, None])
    result = subgroup_table(values, probs, targets, positive=0, resamples=500)
    rows = {r["value"]: r for r in result["rows"]}
    assert rows["D"]["acc"] == pytest.approx(0.3) and rows["D"]["acc_flag"]
    assert not rows["A"]["acc_flag"] and not rows["B"]["acc_flag"]
    low, high = rows["A"]["acc_ci"]
    assert low <= 0.9 <= high and high - low < 0.2
    assert rows["C"]["small"] and np.isnan(rows["C"]["acc"]) and rows["C"]["images"] == 8
    assert not rows["C"]["acc_flag"]
    assert result["heterogeneity"]["p_value"] < 1e-6


def fake_study(root: Path, classes: tuple[str, ...] = CLASSES) -> Path:
    """2 settings x 2 seeds with test and external predictions, a manifest with site and
    patient columns, as covidxr-train and covidxr-eval leave them."""
    data = root / "data"
    rng = np.random.default_rng(3)
    rows, manifest = [], []
    for i in range(80):
        label = i % len(classes)
        path = f"{classes[label]}/images/{classes[label]}-{i}.png"
        split = "train" if i < 40 else "val" if i < 50 else "test"
        rows.append({"path": path, "label": label, "class": classes[label], "split": split,
                     "group": f"patient:{i // 2:016x}"})  # fmt: skip
        manifest.append({"path": path, "label": classes[label], "site": "AB"[i % 4 // 2],
                         "patient": PATIENTS[i // 2], "age": str(20 + i)})  # fmt: skip
    data.mkdir(parents=True)
    with (data / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(manifest[0]))
        writer.writeheader()
        writer.writerows(manifest)
    for row in manifest:  # tiny images: the page reads their headers and grey levels
        write_png(data / row["path"], value=90 if row["label"] == "COVID" else 160, size=16)
    sweep = root / "sweep"
    for n, (lr, seed) in enumerate([(lr, s) for lr in ("1e-3", "1e-4") for s in (1, 2)]):
        run = sweep / str(n)
        (run / ".hydra").mkdir(parents=True)
        config = {"seed": seed, "backbone": {"key": "moco_v2"},
                  "data": {"root": str(data), "manifest": str(data / "labels.csv"),
                           "classes": list(classes), "image_size": 64},
                  "external": str(data),
                  "optimizer": {"_target_": "torch.optim.Adam", "lr": float(lr)}}  # fmt: skip
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        (run / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"optimizer.lr={lr}", f"seed={seed}"])
        )
        (run / "job.json").write_text(
            json.dumps(
                {
                    "settings": [],
                    "machine": {
                        "cpu_capability": "AVX512",
                        "threads": 2,
                        "torch": "2.14.1",
                        "git_commit": "abc",
                    },
                }
            )
        )
        with (run / "split.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        metrics = {}
        skill = 0.35 if lr == "1e-3" else 0.2
        for stage, chosen in (("test", rows[50:]), ("external", rows[:40])):
            targets = np.array([r["label"] for r in chosen])
            p_covid = np.clip((targets == 0) * skill + rng.random(len(chosen)) * (1 - skill), 0, 1)
            write_predictions(run / f"predictions_{stage}.csv", chosen, p_covid, classes)
            correct = ((p_covid >= 0.5) == (targets == 0)).mean()
            metrics |= {f"{stage}/acc": correct, f"{stage}/auroc": 0.5 + skill,
                        f"{stage}/sensitivity": 0.7, f"{stage}/specificity": 0.7}  # fmt: skip
        (run / "metrics.json").write_text(json.dumps(metrics))
    return sweep


def write_predictions(path: Path, rows: list[dict], p_covid: np.ndarray, classes) -> None:
    """``predictions_<stage>.csv``: p(COVID) given, the rest shared by the other classes."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "group", "label", *[f"p_{c}" for c in classes]])
        for r, p in zip(rows, p_covid, strict=True):
            rest = [f"{(1 - p) / (len(classes) - 1):.6f}"] * (len(classes) - 1)
            writer.writerow([r["path"], r["group"], r["label"], f"{p:.6f}", *rest])


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    write_report([fake_study(root)], root / "report", prevalence=0.05)
    return root / "report"


def test_the_page_holds_every_section_and_no_patient_identifier(study: Path) -> None:
    report = json.loads((study / "report.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["flow", "characteristics", "comparison", "curves",
                              "operating_point", "subgroups", "failures", "external",
                              "label_efficiency", "model_card"]  # fmt: skip
    assert sections["flow"]["data"]["per_split"]["test"] == {"COVID": 15, "Normal": 15}
    assert set(sections["subgroups"]["data"]) >= {"site", "age"}  # age in decades
    site = {r["value"]: r for r in sections["subgroups"]["data"]["site"]["rows"]}
    assert set(site) == {"A", "B"}
    assert site["A"]["images"] == sum("AB"[i % 4 // 2] == "A" for i in range(50, 80))
    assert sections["characteristics"]["data"]["patient_distinct"] == 40  # counted, never shown
    assert len(sections["external"]["data"]["pairs"]) == 4
    shift = sections["external"]["data"]["shift"]
    assert shift["internal_size"] == shift["external_size"] == "16 x 16"
    assert 90 < shift["internal_grey_mean"] < 160  # both classes' grey levels, read
    assert sections["characteristics"]["data"]["bits"] == {"train:8": 40, "val:8": 10, "test:8": 30}
    assert sections["operating_point"]["data"]["prespecified"] is True
    curve = sections["operating_point"]["data"]["decision_curve"]
    assert curve["setting"].startswith("optimizer.lr=1e-3")  # the better-discriminating setting
    assert sections["failures"]["missing"] is None  # errors listed; no checkpoint: no CAM
    assert "CC-BY-NC" in sections["model_card"]["data"]["Model details"]["weight licence"]
    assert sections["model_card"]["data"]["Machine"]["torch CPU capability"] == "AVX512"
    for name in ("report.html", "report.json", "checklist_claim2024.csv"):
        text = (study / name).read_text()
        assert not any(p in text for p in PATIENTS), name
    claim = list(csv.DictReader((study / "checklist_claim2024.csv").open()))
    tripod = list(csv.DictReader((study / "checklist_tripod_ai.csv").open()))
    assert [r["item"] for r in claim] == [str(i) for i in range(1, 45)]
    assert {r["item"].rstrip("abcdefg") for r in tripod} == {str(i) for i in range(1, 28)}
    flow = next(r for r in claim if r["item"] == "35")
    assert flow["status"] == "filled" and flow["evidence"] == "#flow"


def test_a_missing_input_is_one_line_not_a_gap(tmp_path: Path) -> None:
    sweep = fake_study(tmp_path)
    for run in sweep.iterdir():
        (run / "predictions_external.csv").unlink()
    write_report([sweep / "0"], tmp_path / "one")
    sections = json.loads((tmp_path / "one" / "report.json").read_text())["sections"]
    assert "No external evaluation" in sections["external"]["missing"]
    html = (tmp_path / "one" / "report.html").read_text()
    assert "One setting: nothing to compare." in html
    assert "give <code>--prevalence P</code>" in html
    claim = {
        r["item"]: r for r in csv.DictReader((tmp_path / "one" / "checklist_claim2024.csv").open())
    }
    assert claim["34"]["status"] == "for the author"  # external: its section is empty


def chromium() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    chromium() is None,
    reason="no chromium and playwright (apt-get install "
    "chromium; pip install playwright): the page is not opened in a browser",
)
def test_the_page_opens_offline_in_a_real_browser(study: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        requests, errors = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((study / "report.html").as_uri())
        images = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        page.screenshot(path=str(study / "screenshot.png"), full_page=True)
        browser.close()
    assert len(images) >= 4 and all(w > 0 for w in images)
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert errors == []
    assert (study / "screenshot.png").stat().st_size > 10_000


def test_a_run_records_the_machine_its_numbers_came_from(tmp_path: Path) -> None:
    """The same config gives other numbers on an AVX2 and an AVX-512 machine: job.json says
    which, with the threads, the GPU and the code's commit."""
    import torch

    from covidxr.run_folder import RunFolder
    from covidxr.utils import locks
    from covidxr.utils.runner import claim_run_folder

    claim_run_folder(tmp_path, ["seed=1"])
    locks.release(RunFolder(tmp_path).lock)
    record = json.loads(RunFolder(tmp_path).job.read_text())
    assert record["settings"] == ["seed=1"]
    machine = record["machine"]
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["threads"] == torch.get_num_threads() and "git_commit" in machine


def test_external_evaluations_join_their_runs_and_a_damaged_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """covidxr-eval ckpt_path=<run>/checkpoints/best.ckpt external=... folds into that run's row
    and page; a damaged metrics.json is named, exit 2."""
    from covidxr.cli import report as report_cli

    sweep = fake_study(tmp_path, ("COVID", "Normal", "Lung_Opacity"))  # 3 classes: one-vs-rest
    trained = sweep / "0"
    evaluation = tmp_path / "eval"
    (evaluation / ".hydra").mkdir(parents=True)
    config = {"ckpt_path": str(trained / "checkpoints" / "best.ckpt"), "external": "/other"}
    (evaluation / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (evaluation / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["external=/other"]))
    shutil.move(trained / "predictions_external.csv", evaluation / "predictions_external.csv")
    metrics = json.loads((trained / "metrics.json").read_text())
    (evaluation / "metrics.json").write_text(json.dumps({"external/auroc": 0.61, "test/acc": 1}))
    (trained / "metrics.json").write_text(
        json.dumps({k: v for k, v in metrics.items() if not k.startswith("external/")})
    )
    assert report_cli.main([str(sweep), str(evaluation), "--output", str(tmp_path / "r")]) == 0
    rows = list(csv.DictReader((tmp_path / "r" / "report.csv").open()))
    assert [r["setting"] for r in rows] == ["optimizer.lr=1e-3", "optimizer.lr=1e-4"]
    assert float(rows[0]["external_auroc_mean"]) == pytest.approx(100 * (0.61 + 0.85) / 2)
    sections = json.loads((tmp_path / "r" / "report.json").read_text())["sections"]
    assert len(sections["external"]["data"]["pairs"]) == 4  # the moved one found in the eval
    assert sections["curves"]["data"]["rows"] and sections["operating_point"]["data"]["points"]

    (trained / "metrics.json").write_text("{not json")
    capsys.readouterr()
    assert report_cli.main([str(sweep), "--output", str(tmp_path / "r2")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(trained / "metrics.json") in line and "is damaged" in line


def test_every_registry_weight_has_a_model_card_with_its_licence(tmp_path: Path) -> None:
    from covidxr.reporting.jobs import Job
    from covidxr.reporting.study.evidence import gather
    from covidxr.reporting.study.markup import PageOptions
    from covidxr.reporting.study.model_card import model_card
    from covidxr.weights.registry import REGISTRY

    for key, spec in REGISTRY.items():
        job = Job(tmp_path, {"seed": 1, "backbone": {"key": key}}, [], metrics={"test/acc": 1})
        card = model_card(gather([job]), PageOptions(tmp_path)).data
        assert card["Model details"]["weight licence"] == spec.licence, key
        assert card["Model details"]["weight key"] == key


def test_a_label_fraction_sweep_draws_the_curve_with_paired_tests_per_fraction(
    tmp_path: Path,
) -> None:
    sweep = fake_study(tmp_path)
    for run in sorted(sweep.iterdir()):
        for fraction in ("0.5", "1.0"):
            copy = sweep.parent / "fractions" / f"{run.name}-{fraction}"
            shutil.copytree(run, copy)
            overrides = yaml.safe_load((copy / ".hydra" / "overrides.yaml").read_text())
            overrides.append(f"data.train_fraction={fraction}")
            (copy / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
            if fraction == "0.5":  # half the training images left unlabeled
                rows = list(csv.DictReader((copy / "split.csv").open()))
                train = [r for r in rows if r["split"] == "train"]
                for r in train[::2]:
                    r["split"] = "unlabeled"
                with (copy / "split.csv").open("w", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(rows)
    write_report([sweep.parent / "fractions"], tmp_path / "r")
    section = json.loads((tmp_path / "r" / "report.json").read_text())["sections"][
        "label_efficiency"
    ]
    points = section["data"]["points"]
    assert set(points) == {"optimizer.lr=1e-3", "optimizer.lr=1e-4"}
    assert [p[0] for p in points["optimizer.lr=1e-3"]] == [20, 40]  # labeled images, ascending
    assert {t["fraction"] for t in section["data"]["paired_tests"]} == {0.5, 1.0}
    assert (tmp_path / "r" / "report_files" / "label_efficiency.png").is_file()


def test_three_settings_get_a_friedman_test_and_rank_shares(tmp_path: Path) -> None:
    import scipy.stats

    sweep = fake_study(tmp_path)
    for n in (0, 1):  # a third setting: copies of the first two runs, lr=1e-5
        copy = sweep / f"third-{n}"
        shutil.copytree(sweep / str(n), copy)
        overrides = yaml.safe_load((copy / ".hydra" / "overrides.yaml").read_text())
        (copy / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump(["optimizer.lr=1e-5", *overrides[1:]])
        )
    write_report([sweep], tmp_path / "r")
    data = json.loads((tmp_path / "r" / "report.json").read_text())["sections"]["comparison"]
    friedman = data["data"]["friedman"]
    assert friedman["settings"] == 3 and friedman["blocks"] == 2
    auroc = {s: [0.85, 0.85] for s in ("1e-3", "1e-5")} | {"1e-4": [0.7, 0.7]}
    expected = scipy.stats.friedmanchisquare(*auroc.values())
    assert friedman["p_value"] == pytest.approx(expected.pvalue)
    shares = data["data"]["rank_stability"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["optimizer.lr=1e-4"] < 0.05  # the weaker setting seldom ranks first
