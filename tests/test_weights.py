"""The ten pretrained weights: exact publisher formats, refusals, and the download path."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from conftest import compose_config
from torchvision.models import resnet18

from covidxr.cli import weights as weights_cli
from covidxr.data.loading.transforms import NormalizeToRGB
from covidxr.models.backbone import build_backbone, resnet50_trunk
from covidxr.paths import CONF_DIR, REPO_ROOT
from covidxr.weights import store as weights_store
from covidxr.weights.adapters import load_weights_file
from covidxr.weights.registry import REGISTRY, WeightsError, get_spec, study_keys


@pytest.fixture(scope="module")
def source_state() -> dict[str, torch.Tensor]:
    """A random ResNet50 trunk whose BatchNorm statistics and counters are not the defaults."""
    torch.manual_seed(0)
    state = resnet50_trunk().state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith(("running_mean", "running_var")):
            state[key] = torch.rand_like(value) + 0.5
    return state


OPTIMIZER = {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}


def _torchvision(t: dict) -> object:  # saved before BatchNorm counters existed
    plain = {k: v for k, v in t.items() if not k.endswith("num_batches_tracked")}
    return {**plain, "fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)}


def _moco(t: dict, head: dict) -> object:
    encoder = {**t, **head}
    state = {f"module.encoder_q.{k}": v for k, v in encoder.items()}
    state |= {f"module.encoder_k.{k}": v.clone() for k, v in encoder.items()}
    state |= {"module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1)}
    return {"epoch": 200, "arch": "resnet50", "state_dict": state}


def _newt_supervised(t: dict) -> object:
    state = {**t, "fc.weight": torch.randn(10000, 2048), "fc.bias": torch.randn(10000)}
    return {
        "epoch": 90,
        "arch": "resnet50",
        "state_dict": state,
        "best_acc1": torch.tensor(70.0),
        "optimizer": OPTIMIZER,
    }


def _newt_swav(t: dict) -> object:
    heads = {
        "projection_head.0.weight": torch.randn(2048, 2048),
        "projection_head.0.bias": torch.randn(2048),
        "projection_head.1.weight": torch.randn(2048),
        "projection_head.1.bias": torch.randn(2048),
        "projection_head.1.running_mean": torch.randn(2048),
        "projection_head.1.running_var": torch.rand(2048),
        "projection_head.1.num_batches_tracked": torch.tensor(5),
        "projection_head.3.weight": torch.randn(128, 2048),
        "projection_head.3.bias": torch.randn(128),
        "prototypes.weight": torch.randn(3000, 128),
    }
    state = {f"module.{k}": v for k, v in {**t, **heads}.items()}
    return {"epoch": 1000, "state_dict": state, "optimizer": OPTIMIZER, "amp": {}}


def _benchmark_transfer(t: dict, prefix: str = "") -> object:  # Linear + Sigmoid multi-label head
    state = {**t, "fc.0.weight": torch.randn(14, 2048), "fc.0.bias": torch.randn(14)}
    return {
        "epoch": 30,
        "lossMIN": 0.15,
        "state_dict": {f"{prefix}{k}": v for k, v in state.items()},
        "optimizer": OPTIMIZER,
        "scheduler": {"last_epoch": 30},
    }


def grey_kernel(t: dict) -> torch.Tensor:
    """The one-channel conv1 of a TorchXRayVision file, from the trunk ``t``'s kernel."""
    return t["conv1.weight"].sum(dim=1, keepdim=True)


def _torchxrayvision(t: dict) -> object:  # xrv.models.ResNet: plain state_dict, grey conv1
    state = {**t, "conv1.weight": grey_kernel(t)}
    return {**state, "fc.weight": torch.randn(18, 2048), "fc.bias": torch.randn(18)}


def _moco_v2_head() -> dict[str, torch.Tensor]:
    return {
        "fc.0.weight": torch.randn(2048, 2048),
        "fc.0.bias": torch.randn(2048),
        "fc.2.weight": torch.randn(128, 2048),
        "fc.2.bias": torch.randn(128),
    }


#: Each publisher's exact layout (docs/study.md, "Checkpoint formats"), by format name.
PUBLISHER_WRITERS = {
    "torchvision": _torchvision,
    "moco_v1": lambda t: _moco(
        t, {"fc.weight": torch.randn(128, 2048), "fc.bias": torch.randn(128)}
    ),
    "moco_v2": lambda t: _moco(t, _moco_v2_head()),
    "newt_supervised": _newt_supervised,
    "newt_swav": _newt_swav,
    "benchmark_transfer": _benchmark_transfer,
    "benchmark_transfer_dataparallel": lambda t: _benchmark_transfer(t, "module."),
    "torchxrayvision": _torchxrayvision,
}
FILE_SPECS = [spec for spec in REGISTRY.values() if spec.loads_file]


def publisher_checkpoint(key: str, trunk: dict[str, torch.Tensor]) -> object:
    """``trunk`` saved the way the publisher of ``key`` saved theirs."""
    return PUBLISHER_WRITERS[get_spec(key).format.name](dict(trunk))


def test_the_registry_holds_the_studys_ten_weights_and_the_baselines() -> None:
    assert len(study_keys()) == 10
    assert {"random", "file", "xrv_resnet50_res512_all"} <= set(REGISTRY)
    for spec in REGISTRY.values():
        assert spec.paper_name and spec.description and spec.source
        if spec.in_study:
            assert spec.file_name and spec.citation
            metrics = {"acc", "precision", "sensitivity", "f1", "specificity"}
            assert set(spec.paper_results) == metrics
    best = max(study_keys(), key=lambda k: REGISTRY[k].paper_results["acc"])
    assert best == "inat2021_mini_swav_1k"
    assert not REGISTRY["xrv_resnet50_res512_all"].in_study


def test_every_format_in_the_registry_has_a_publisher_layout_in_the_tests() -> None:
    assert {spec.format.name for spec in FILE_SPECS} == set(PUBLISHER_WRITERS)


@pytest.mark.parametrize("spec", REGISTRY.values(), ids=list(REGISTRY))
def test_backbone_options_come_from_the_registry(spec, tmp_path: Path, data_dir: Path) -> None:
    overrides = [f"backbone={spec.key}"] + (["backbone.path=x.pth"] if spec.requires_path else [])
    cfg = compose_config("train", overrides, tmp_path, data_dir)
    assert cfg.backbone.key == spec.key
    assert tuple(cfg.backbone.mean) == spec.mean and tuple(cfg.backbone.std) == spec.std
    assert tuple(cfg.model.backbone.mean) == spec.mean  # the model owns the normalisation


def test_one_file_names_each_weight() -> None:
    """A weight lives in one place: its registry entry (conf/ and the code read it from there)."""
    sources = [*(REPO_ROOT / "covidxr").rglob("*.py"), *CONF_DIR.rglob("*.yaml")]
    for key in ("imagenet_chexpert", "inat2021_sup_scratch", "xrv_resnet50_res512_all"):
        naming = [p for p in sources if key in p.read_text()]
        assert naming == [REPO_ROOT / "covidxr" / "weights" / "registry.py"], key


@pytest.mark.parametrize("key", [spec.key for spec in FILE_SPECS])
def test_publisher_format_loads_exactly(key: str, source_state, tmp_path: Path, capsys) -> None:
    spec = get_spec(key)
    if spec.format.input_channels == 1:  # what a grey-trained kernel spread over RGB looks like
        spread = grey_kernel(source_state).repeat(1, 3, 1, 1) / 3
        source_state = {**source_state, "conv1.weight": spread}
    path = tmp_path / (spec.file_name or "local.pth")
    torch.save(publisher_checkpoint(key, source_state), path)
    assert weights_cli.main(["verify", key, "--file", str(path)]) == 0
    assert "all 318 ResNet50 backbone tensors" in capsys.readouterr().out
    loaded = build_backbone(key, path=path).state_dict()
    assert loaded.keys() == source_state.keys()
    for name, tensor in source_state.items():
        if spec.format.name == "torchvision" and name.endswith("num_batches_tracked"):
            assert int(loaded[name]) == 0  # absent from torchvision's file
        elif name == "conv1.weight" and spec.format.input_channels == 1:
            assert torch.allclose(loaded[name], tensor, atol=1e-6)
        else:
            assert torch.equal(loaded[name], tensor), name


def test_a_grey_trunk_computes_the_publishers_function(source_state, tmp_path: Path) -> None:
    """TorchXRayVision's one-channel network on grey x equals covidxr's trunk on x as RGB."""
    from torchvision.models import resnet50

    path = tmp_path / "xrv.pt"
    torch.save(publisher_checkpoint("xrv_resnet50_res512_all", source_state), path)
    publisher = resnet50(num_classes=18)
    publisher.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    publisher.load_state_dict(torch.load(path, weights_only=True))
    publisher.fc = torch.nn.Identity()
    ours = build_backbone("xrv_resnet50_res512_all", path=path)
    pixels = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    spec = get_spec("xrv_resnet50_res512_all")
    xrv_input = (2 * (pixels.float() / 255) - 1) * 1024  # xrv.datasets.normalize(img, 255)
    ours_input = NormalizeToRGB(spec.mean, spec.std)(pixels)
    assert torch.allclose(ours_input[:, :1], xrv_input, atol=1e-3)
    with torch.no_grad():
        expected = publisher.eval()(xrv_input)
        got = ours.eval()(ours_input)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_a_file_of_another_publisher_is_refused(source_state, tmp_path: Path) -> None:
    path = tmp_path / "moco.pth.tar"
    torch.save(publisher_checkpoint("moco_v2", source_state), path)
    with pytest.raises(WeightsError, match="does not fit a ResNet50 trunk"):
        load_weights_file(resnet50_trunk(), get_spec("inat2021_mini_swav_1k").format, path)
    plain = _save(tmp_path, source_state)
    with pytest.raises(WeightsError, match="expected a top-level 'state_dict'"):
        load_weights_file(resnet50_trunk(), get_spec("moco_v1").format, plain)


def _save(folder: Path, obj: object, name: str = "plain.pth") -> Path:
    torch.save(obj, folder / name)
    return folder / name


def test_resnet18_is_refused_with_the_keys_that_do_not_fit(tmp_path: Path, capsys) -> None:
    path = _save(tmp_path, resnet18().state_dict(), "resnet18.pth")
    assert weights_cli.main(["verify", "imagenet", "--file", str(path)]) == 1
    err = capsys.readouterr().err
    assert "missing" in err and "another shape" in err and "resnet18.pth" in err


def test_truncated_file_is_refused(source_state, tmp_path: Path) -> None:
    path = _save(tmp_path, publisher_checkpoint("imagenet", source_state))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated"):
        build_backbone("imagenet", path=path)


class _Payload:
    """Unpickling this would create a file: the code a malicious checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = _save(tmp_path, {"state_dict": {"x": torch.zeros(1)}, "evil": _Payload(marker)})
    with pytest.raises(WeightsError, match="execute code"):
        build_backbone("chestxray14", path=path)
    assert not marker.exists()


def test_manual_weights_explain_the_box_archive(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COVIDXR_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        weights_store.fetch("inat2021_mini_swav_1k")
    message = str(err.value)
    assert "5.7 GB" in message and "covidxr-weights import inat2021_mini_swav_1k" in message
    assert str(tmp_path / "inat2021_swav_mini_1000_ep.pth") in message


# --- downloads, against a server on 127.0.0.1 started here ---------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()
    _QuietHandler.requests = []
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("COVIDXR_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("COVIDXR_DOWNLOAD_TIMEOUT", "2")
    return folder


def _serve_imagenet(server, source_state, monkeypatch, published_hash: str | None = None) -> Path:
    base, root = server
    spec = get_spec("imagenet")
    path = _save(root, publisher_checkpoint("imagenet", source_state), spec.file_name)
    digest = weights_store.file_digests(path)["sha256"]
    spec = dataclasses.replace(
        spec,
        url=f"{base}/{spec.file_name}",
        published_hash=published_hash or f"sha256:{digest[:8]}",
    )
    monkeypatch.setitem(REGISTRY, "imagenet", spec)
    return path


def test_download_checks_the_hash_caches_and_records(
    server, cache, source_state, monkeypatch
) -> None:
    served = _serve_imagenet(server, source_state, monkeypatch)
    path = weights_store.fetch("imagenet")
    assert path == cache / "resnet50-0676ba61.pth"
    assert path.read_bytes() == served.read_bytes()
    lock = json.loads((cache / "weights.lock.json").read_text())
    assert lock["imagenet"]["sha256"] == weights_store.file_digests(served)["sha256"]
    assert weights_store.fetch("imagenet") == path  # cached: no second request
    assert len(_QuietHandler.requests) == 1
    trunk = build_backbone("imagenet")  # through the cache
    assert torch.equal(trunk.state_dict()["conv1.weight"], source_state["conv1.weight"])
    assert not list(cache.glob("*.part"))


def test_download_reports_progress_in_chunks_with_the_total(server, source_state, tmp_path) -> None:
    base, root = server
    path = _save(root, {"w": torch.randn(600_000)}, "blob.pth")  # ~2.4 MB: several chunks
    sizes, totals = [], set()
    with (tmp_path / "out").open("wb") as dest:
        weights_store._stream(
            f"{base}/blob.pth", dest, lambda n, t: (sizes.append(n), totals.add(t))
        )
    assert sum(sizes) == path.stat().st_size and len(sizes) > 1
    assert totals == {path.stat().st_size}


def test_hash_mismatch_removes_the_download(server, cache, source_state, monkeypatch) -> None:
    _serve_imagenet(server, source_state, monkeypatch, published_hash="sha256:0676ba61")
    with pytest.raises(WeightsError, match="not the published imagenet file"):
        weights_store.fetch("imagenet")
    assert not (cache / "resnet50-0676ba61.pth").exists()
    assert not list(cache.glob("*.part")) and not list(cache.glob(".*"))


def test_a_cached_file_that_changed_is_refused(server, cache, source_state, monkeypatch) -> None:
    _serve_imagenet(server, source_state, monkeypatch)
    path = weights_store.fetch("imagenet")
    with path.open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\0\1\2\3")
    with pytest.raises(WeightsError, match="changed since it was recorded"):
        build_backbone("imagenet")


def test_import_copies_verifies_and_records(cache, source_state, tmp_path: Path, capsys) -> None:
    spec = get_spec("inat2021_sup")
    path = _save(tmp_path, publisher_checkpoint("inat2021_sup", source_state), spec.file_name)
    assert weights_cli.main(["import", "inat2021_sup", str(path)]) == 0
    assert (cache / spec.file_name).read_bytes() == path.read_bytes()
    assert "inat2021_sup" in json.loads((cache / "weights.lock.json").read_text())
    assert weights_cli.main(["verify", "inat2021_sup"]) == 0
    assert weights_cli.main(["list"]) == 0
    assert "yes" in capsys.readouterr().out
    bad = _save(tmp_path, resnet18().state_dict(), "r18.pth")
    assert weights_cli.main(["import", "inat2021_sup_scratch", str(bad)]) == 1
    assert not (cache / get_spec("inat2021_sup_scratch").file_name).exists()


def test_unreachable_url_fails_with_the_manual_step(cache, monkeypatch, capsys) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    spec = dataclasses.replace(get_spec("moco_v2"), url=f"http://127.0.0.1:{port}/moco.pth.tar")
    monkeypatch.setitem(REGISTRY, "moco_v2", spec)
    assert weights_cli.main(["fetch", "moco_v2"]) == 1
    err = capsys.readouterr().err
    for part in ("moco_v2", spec.url, str(cache / spec.file_name), "covidxr-weights import"):
        assert part in err


def test_a_server_that_never_answers_times_out(cache, monkeypatch) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x.pth"
        monkeypatch.setitem(REGISTRY, "moco_v1", dataclasses.replace(get_spec("moco_v1"), url=url))
        outcome: list[BaseException] = []

        def attempt() -> None:
            try:
                weights_store.fetch("moco_v1")
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(60)  # a liveness guard (the read timeout is 2 s), not a speed check
        assert not worker.is_alive(), "the download hung instead of giving up"
        assert isinstance(outcome[0], WeightsError)
        assert "Could not download" in str(outcome[0]) and "within 2 s per read" in str(outcome[0])


def test_an_unwritable_cache_is_one_clear_error(
    source_state, tmp_path: Path, monkeypatch, capsys
) -> None:
    """(A folder below a plain file: unwritable even for root.)"""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("COVIDXR_WEIGHTS_DIR", str(blocker / "cache"))
    spec = get_spec("inat2021_sup")
    path = _save(tmp_path, publisher_checkpoint("inat2021_sup", source_state), spec.file_name)
    assert weights_cli.main(["import", "inat2021_sup", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "Cannot write" in err and "COVIDXR_WEIGHTS_DIR" in err and "Traceback" not in err


def test_a_file_that_is_no_checkpoint_never_gets_unsafe_advice(tmp_path: Path, capsys) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    assert weights_cli.main(["verify", "imagenet", "--file", str(path)]) == 1
    err = capsys.readouterr().err
    assert "notes.pth" in err and "weights_only=False" not in err


def test_every_weight_states_its_licence_and_checkpoints_carry_it() -> None:
    from covidxr.models.module import XRayClassifier

    assert all(spec.licence.strip() for spec in REGISTRY.values())
    assert REGISTRY["moco_v1"].licence.startswith("CC-BY-NC 4.0")
    assert REGISTRY["moco_v2"].licence.startswith("CC-BY-NC 4.0")
    model = XRayClassifier(backbone=REGISTRY["random"].config(), image_size=64)
    assert model.hparams.backbone["licence"] == REGISTRY["random"].licence


def test_a_weight_fed_another_size_than_it_was_trained_at_says_so(caplog) -> None:
    from omegaconf import OmegaConf

    from covidxr.models.options import note_native_size

    xrv = REGISTRY["xrv_resnet50_res512_all"].config()
    at = {
        size: OmegaConf.create({"backbone": xrv, "data": {"image_size": size}})
        for size in (224, 512)
    }
    with caplog.at_level("WARNING"):
        note = note_native_size(at[224])
    assert "trained at 512 px" in note and "data.image_size=512" in note
    assert note in caplog.text
    assert note_native_size(at[512]) is None
    imagenet = OmegaConf.create(
        {"backbone": REGISTRY["imagenet"].config(), "data": {"image_size": 224}}
    )
    assert note_native_size(imagenet) is None
