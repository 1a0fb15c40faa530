"""The app end to end: ``python -m hvae_pipeline.demo.app --model <tiny pipeline>`` on 127.0.0.1, via gradio_client."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from huggingface_hub import ModelCard

from hvae_pipeline.bundled_model import load_pipeline
from hvae_pipeline.demo.app import (
    GALLERY_CLASS,
    MAX_QUEUE_SIZE,
    PAGE_CSS,
    build_demo,
    build_parser,
    friendly_errors,
    main,
)
from hvae_pipeline.demo.uploads import DemoInputError
from hvae_pipeline.hub.bundled_checkpoint import BUNDLED_CHECKPOINT, has_bundled_checkpoint
from hvae_pipeline.pipeline import HVAEPipeline


@pytest.fixture
def client(demo_url: str) -> Client:
    """A client with its own session (its own current samples)."""
    return Client(demo_url, verbose=False)


def test_generate_then_download_the_same_samples(client: Client, tmp_path: Path) -> None:
    gallery = client.predict(11, 4, 1.0, 0.5, 0, api_name="/generate")

    assert len(gallery) == 4 * 3
    captions = [item["caption"] for item in gallery]
    assert captions[:3] == ["#1 image", captions[1], "#1 overlay"] and captions[1].startswith("#1 mask · tumour area")
    for item in gallery:
        with PIL.Image.open(item["image"]) as picture:
            assert picture.format == "PNG" and picture.size == (16, 16)  # lossless, not webp
    areas = [int(c.split("tumour area ")[1].split(" px")[0]) for c in captions if " mask · " in c]
    shown_masks = [np.asarray(PIL.Image.open(item["image"])) for item in gallery[1::3]]
    assert areas == [int((mask > 0).sum()) for mask in shown_masks]

    archive_path = client.predict(api_name="/download")

    with zipfile.ZipFile(archive_path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        stored_masks = [np.asarray(PIL.Image.open(archive.open(s["mask"]))) for s in manifest["samples"]]
    assert Path(archive_path).name == "hvae-samples-seed11-n4.zip"
    assert manifest["seed"] == 11 and [s["tumour_area"] for s in manifest["samples"]] == areas
    for stored, shown in zip(stored_masks, shown_masks):
        np.testing.assert_array_equal(stored * 255, shown)  # the archive holds exactly the samples on screen


def test_download_before_generating_gives_nothing(client: Client) -> None:
    assert client.predict(api_name="/download") is None


def test_interpolate_returns_every_frame(client: Client) -> None:
    frames = client.predict(0, 1, 4, 1.0, 0.5, api_name="/interpolate")

    assert [item["caption"] for item in frames][::3] == ["seed 0 image", "t=0.33 image", "t=0.67 image", "seed 1 image"]


def test_reconstruct_an_uploaded_slice_and_refuse_a_colour_one(client: Client, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    PIL.Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(tmp_path / "slice.png")
    PIL.Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "colour.png")

    gallery, notes = client.predict(
        handle_file(tmp_path / "slice.png"), 0, None, 2, 0, 0.5, api_name="/reconstruct"
    )

    assert [item["caption"].split(" · ")[0] for item in gallery] == ["input image (no mask given)"] + [
        f"{draw} {kind}" for draw in ("posterior mean", "posterior sample 1") for kind in ("image", "mask", "overlay")
    ]
    assert "Resized 20x20 to 16x16 and min-max normalised" in notes and "the model imputed it" in notes
    with pytest.raises(AppError, match="colour.png has 3 channels but the model expects a greyscale"):
        client.predict(handle_file(tmp_path / "colour.png"), 0, None, 2, 0, 0.5, api_name="/reconstruct")


def test_requests_beyond_the_bounds_are_refused(client: Client) -> None:
    with pytest.raises(AppError, match="greater than maximum value 64"):
        client.predict(0, 65, 1.0, 0.5, 0, api_name="/generate")
    with pytest.raises(AppError, match="lower the minimum tumour area"):
        client.predict(0, 2, 1.0, 0.95, 256, api_name="/generate")
    with pytest.raises(AppError, match="Seed: expected a whole number, got 'seven'"):
        client.predict("seven", 2, 1.0, 0.5, 0, api_name="/generate")
    assert len(client.predict("7", 1, 1.0, 0.5, 0, api_name="/generate")) == 3  # numeric text: one pair drawn (3 pictures)


def test_the_request_queue_is_bounded(tiny_pipeline: HVAEPipeline) -> None:
    demo = build_demo(tiny_pipeline, "tiny test model")

    # One request runs at a time (every event uses the queue's default limit) and few may wait.
    assert demo._queue.default_concurrency_limit == 1 and demo._queue.max_size == MAX_QUEUE_SIZE
    assert {f.api_name: f.concurrency_limit for f in demo.fns.values()} == dict.fromkeys(
        ["generate", "interpolate", "reconstruct", "download"], "default"
    )


def test_friendly_errors_become_gradio_errors_with_their_message() -> None:
    @friendly_errors
    def refuse(value: int) -> int:
        raise DemoInputError(f"Seed must be between 0 and 9, got {value}.")

    with pytest.raises(gr.Error, match="Seed must be between 0 and 9, got 12."):
        refuse(12)


def test_command_line_defaults_stay_local() -> None:
    args = build_parser().parse_args([])

    assert (args.model, args.host, args.port, args.share, args.device) == (None, "127.0.0.1", None, False, "cpu")


@pytest.mark.parametrize(("device", "message"), [
    ("meta", "--device meta: the meta device holds no values"),
    ("tpu7", "--device tpu7: not a torch device"),
])
def test_unusable_device_exits_with_a_message_before_loading(device: str, message: str, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys.modules[main.__module__], "load_pipeline", lambda model: pytest.fail("loaded a model"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", device])

    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_model_runs_on_the_chosen_device(tiny_pipeline: HVAEPipeline, monkeypatch) -> None:
    launched = []
    app = sys.modules[main.__module__]
    monkeypatch.setattr(app, "load_pipeline", lambda model: (tiny_pipeline, "tiny"))
    monkeypatch.setattr(app, "launch", lambda demo, **options: launched.append(options))

    assert main(["--device", "cpu"]) == 0
    assert tiny_pipeline.device.type == "cpu" and launched == [{"host": "127.0.0.1", "port": None, "share": False}]


def test_missing_model_exits_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "absent")])

    assert exit_info.value.code == 2
    assert "hvae-demo: error:" in capsys.readouterr().err


def markdown_texts(demo: gr.Blocks) -> list[str]:
    return [block.value or "" for block in demo.blocks.values() if isinstance(block, gr.Markdown)]


@pytest.mark.skipif(not has_bundled_checkpoint(), reason="no default model is bundled in this checkout")
def test_the_bundled_model_is_named_by_its_card_and_its_data_in_words() -> None:
    pipeline, description = load_pipeline(None)
    texts = markdown_texts(build_demo(pipeline, description))

    header, info = texts[0], next(text for text in texts if text.startswith("**Loaded:**"))
    model_name = ModelCard.load(BUNDLED_CHECKPOINT / "README.md").data.model_name
    assert f"Model: **{model_name}, the bundled default model" in header
    assert f"**Loaded:** {model_name}, the bundled default model" in info
    assert "**Training data:** BraTS 2016/2017 brain tumour MRI as distributed in the Medical Segmentation " in info
    assert not any(str(BUNDLED_CHECKPOINT.parent) in text for text in texts[:-1]), "a path of this machine is shown"
    assert "msd-task01" not in header + info.split("### Model card")[0]


def test_a_model_folder_is_named_by_its_folder_not_its_path(saved_pipeline_dir: Path) -> None:
    pipeline, description = load_pipeline(str(saved_pipeline_dir))
    header = markdown_texts(build_demo(pipeline, description))[0]

    assert "Model: **pipeline (a local pipeline folder)**" in header and str(saved_pipeline_dir) not in header


def test_galleries_are_uncapped_by_the_page_style(tiny_pipeline: HVAEPipeline) -> None:
    galleries = [block for block in build_demo(tiny_pipeline, "tiny").blocks.values() if isinstance(block, gr.Gallery)]

    # Gradio caps a gallery at 55 % of the window (1.5 rows of three); the browser test checks the page itself.
    assert len(galleries) == 3 and all(GALLERY_CLASS in gallery.elem_classes for gallery in galleries)
    assert f".{GALLERY_CLASS} .grid-wrap.fixed-height" in PAGE_CSS and "max-height: none" in PAGE_CSS
