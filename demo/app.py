"""The Gradio app: ``hvae-demo [--model PATH_OR_REPO] [--device] [--host] [--port] [--share]`` (``python -m hvae_pipeline.demo.app``).

The app is local by default: it listens on 127.0.0.1, sends no analytics, loads no web fonts or scripts from the
internet (Gradio 6 serves its fonts itself; analytics are switched off per app), and shares a public link only with ``--share``.
"""

from __future__ import annotations

import argparse
import functools
import re
import tempfile
from typing import Any, Callable, Sequence

import gradio as gr

from hvae_pipeline.cli.options import check_device
from hvae_pipeline.cli.version import add_version_option
from hvae_pipeline.bundled_model import load_pipeline
from hvae_pipeline.hub.model_card import dataset_title
from hvae_pipeline.pipeline import HVAEPipeline

from . import callbacks
from .uploads import UPLOAD_SUFFIXES, DemoInputError

# Requests wait in one queue and run one at a time: the model shares the machine's few CPU cores.
MAX_QUEUE_SIZE = 16
MAX_UPLOAD_SIZE = "50mb"  # a compressed BraTS volume is ~10 MB
GALLERY_BUTTONS = ["download", "fullscreen"]  # no "share": it would post images to the Hugging Face Hub
GALLERY_CLASS = "pair-gallery"
# Gradio caps a gallery at 55 % of the window and scrolls inside it: 1.5 rows of three square pictures. Uncapped, the
# gallery grows with its rows (one row per sample) and the page scrolls instead.
PAGE_CSS = f".{GALLERY_CLASS} .grid-wrap.fixed-height {{ max-height: none; overflow-y: visible; }}"
# The Model info line listing the model card's `datasets` entries (written by callbacks.model_info_markdown).
TRAINING_DATA_LINE = re.compile(r"^(\*\*Training data:\*\* )(.+)$", flags=re.M)
PREPROCESSING_NOTE = (
    "Uploaded slices are brought to the model's input: centred on a square (padded with their minimum value), "
    "resized to {size}x{size} pixels and min-max normalised per slice to [0, 1]. NIfTI volumes are read in the "
    "training orientation (RAS, radiological view); pick the axial slice with the index."
)


def whole_number_field(**settings: Any) -> gr.Number:
    """A ``gr.Number(precision=0, minimum=0, ...)`` whose non-numeric input (API clients can send any text) gets an
    error naming the field, where Gradio's own field fails with a generic "the upstream app has raised an exception".

    The check wraps the instance's ``preprocess``: a subclass of a Gradio component would make Gradio write a
    ``.pyi`` stub beside this module at import time.
    """
    field = gr.Number(precision=0, minimum=0, **settings)
    convert = field.preprocess

    def preprocess(payload: float | str | None) -> float | int | None:
        if isinstance(payload, str):
            try:
                payload = float(payload)
            except ValueError:
                raise gr.Error(f"{field.label}: expected a whole number, got {payload!r}") from None
        return convert(payload)

    field.preprocess = preprocess
    return field


def friendly_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """Show a callback's :class:`DemoInputError` as a Gradio error pop-up with its message (no stack trace)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except DemoInputError as error:
            raise gr.Error(str(error), print_exception=False) from error

    return wrapper


def model_info(pipeline: HVAEPipeline, description: str) -> str:
    """The Model info tab: :func:`callbacks.model_info_markdown`, its training data named in words (the card's
    ``datasets`` entries are short ids such as ``msd-task01``).

    Args:
        pipeline: The loaded pipeline.
        description: What was loaded (the model's name in its card and where it came from).
    """
    def titles(line: re.Match) -> str:
        return line.group(1) + "; ".join(dataset_title(name.strip()) for name in line.group(2).split(","))

    return TRAINING_DATA_LINE.sub(titles, callbacks.model_info_markdown(pipeline, description), count=1)


def pair_gallery(label: str, elem_id: str) -> gr.Gallery:
    """A gallery of (image, mask, overlay) triples: three square pictures a row, stored as PNG (lossless: masks
    keep their exact pixels, unlike Gradio's default webp). Its height follows its rows (:data:`PAGE_CSS`), so every
    sample (one row) shows whole, without a scroll bar inside the gallery.

    Args:
        label: The gallery's title.
        elem_id: Its HTML id (the browser test finds the sample gallery by it).
    """
    return gr.Gallery(
        label=label,
        format="png",
        columns=3,
        object_fit="contain",
        buttons=GALLERY_BUTTONS,
        elem_id=elem_id,
        elem_classes=[GALLERY_CLASS],
        scale=3,
    )


def build_demo(pipeline: HVAEPipeline, description: str) -> gr.Blocks:
    """Build the demo's interface around a loaded pipeline, with its request queue set up.

    Args:
        pipeline: The pipeline to sample from.
        description: What was loaded, shown at the top: the model's name, never a path of this machine (see
            :func:`hvae_pipeline.bundled_model.load_pipeline`).

    Returns:
        The Blocks app, queued (one request at a time, at most :data:`MAX_QUEUE_SIZE` waiting); start it with
        :func:`launch`. API names: ``/generate``, ``/interpolate``, ``/reconstruct``, ``/download``.
    """
    config = pipeline.model.config
    pipeline.set_progress_bar_config(disable=True)  # per-request progress bars would only clutter the server log
    # Archives live in one folder per app, removed when the process exits (Gradio serves copies from its cache).
    download_folder = tempfile.TemporaryDirectory(prefix="hvae-demo-")

    @friendly_errors
    def generate(
        seed: float, num_samples: float, temperature: float, mask_threshold: float, min_tumour_area: float
    ) -> tuple[callbacks.GalleryItems, callbacks.SampleSet]:
        samples = callbacks.generate_samples(pipeline, seed, num_samples, temperature, mask_threshold, min_tumour_area)
        return callbacks.sample_gallery(samples), samples

    @friendly_errors
    def interpolate(
        seed_a: float, seed_b: float, num_frames: float, temperature: float, mask_threshold: float
    ) -> callbacks.GalleryItems:
        return callbacks.interpolate_seeds(pipeline, seed_a, seed_b, num_frames, temperature, mask_threshold)

    @friendly_errors
    def reconstruct(
        slice_path: str | None,
        slice_index: float,
        mask_path: str | None,
        num_samples: float,
        seed: float,
        mask_threshold: float,
    ) -> tuple[callbacks.GalleryItems, str]:
        return callbacks.reconstruct_upload(pipeline, slice_path, slice_index, mask_path, num_samples, seed, mask_threshold)

    def download(samples: callbacks.SampleSet | None) -> str | None:
        if samples is None:
            gr.Warning("Nothing to download yet: generate samples in the Sample tab first.")
            return None
        return str(callbacks.write_samples_zip(samples, description, download_folder.name))

    with gr.Blocks(title="HVAE paired image + tumour mask demo", analytics_enabled=False) as demo:
        samples_state = gr.State(None)
        gr.Markdown(f"# HVAE: paired slices and tumour masks\nModel: **{description}**")
        if callbacks.is_untrained(pipeline):
            gr.Markdown("> ⚠️ **Untrained model**: its weights are random, so the samples below are noise.")

        with gr.Tab("Sample"):
            with gr.Row():
                with gr.Column(scale=1):
                    seed = whole_number_field(value=0, label="Seed")
                    num_samples = gr.Slider(1, callbacks.MAX_SAMPLES, value=8, step=1, label="Number of samples")
                    temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="Temperature")
                    mask_threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Mask threshold")
                    min_area = gr.Number(
                        value=callbacks.default_min_tumour_area(config.sample_size),
                        precision=0,
                        minimum=0,
                        maximum=config.sample_size**2,
                        label="Minimum tumour area (pixels)",
                    )
                    generate_button = gr.Button("Generate", variant="primary")
                gallery = pair_gallery("samples: image, mask, overlay (tumour in colour)", "sample-gallery")
            generate_button.click(
                generate,
                [seed, num_samples, temperature, mask_threshold, min_area],
                [gallery, samples_state],
                api_name="generate",
            )

        with gr.Tab("Explore"):
            gr.Markdown("Walk through latent space from the prior latent of seed A to that of seed B (spherical interpolation).")
            with gr.Row():
                with gr.Column(scale=1):
                    seed_a = whole_number_field(value=0, label="Seed A")
                    seed_b = whole_number_field(value=1, label="Seed B")
                    num_frames = gr.Slider(2, callbacks.MAX_FRAMES, value=8, step=1, label="Frames")
                    explore_temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="Temperature")
                    explore_threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Mask threshold")
                    interpolate_button = gr.Button("Interpolate", variant="primary")
                frames = pair_gallery("frames: image, mask, overlay", "explore-gallery")
            interpolate_button.click(
                interpolate,
                [seed_a, seed_b, num_frames, explore_temperature, explore_threshold],
                frames,
                api_name="interpolate",
            )

        with gr.Tab("Reconstruct"):
            gr.Markdown(PREPROCESSING_NOTE.format(size=config.sample_size))
            with gr.Row():
                with gr.Column(scale=1):
                    slice_file = gr.File(label="Slice (PNG, TIF) or NIfTI volume", file_types=list(UPLOAD_SUFFIXES))
                    slice_index = whole_number_field(value=0, label="Slice index (NIfTI only)")
                    mask_file = gr.File(label="Its tumour mask (optional)", file_types=list(UPLOAD_SUFFIXES))
                    posterior_samples = gr.Slider(
                        1, callbacks.MAX_POSTERIOR_SAMPLES, value=4, step=1, label="Reconstructions"
                    )
                    posterior_seed = whole_number_field(value=0, label="Seed")
                    reconstruct_threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Mask threshold")
                    reconstruct_button = gr.Button("Reconstruct", variant="primary")
                with gr.Column(scale=3):
                    preprocessing = gr.Markdown()
                    reconstructions = pair_gallery(
                        "input, posterior mean, posterior samples: image, mask, overlay", "reconstruct-gallery"
                    )
            reconstruct_button.click(
                reconstruct,
                [slice_file, slice_index, mask_file, posterior_samples, posterior_seed, reconstruct_threshold],
                [reconstructions, preprocessing],
                api_name="reconstruct",
            )

        with gr.Tab("Download"):
            gr.Markdown(
                "A zip of the samples last generated in the Sample tab: PNG pairs (`images/`, `masks/` with class "
                "ids 0/1), the same samples as NIfTI volumes (`images.nii.gz`, `masks.nii.gz`, sample i = slice i) "
                "and a manifest (`manifest.csv`, `manifest.json`: file names, seed, tumour area, settings)."
            )
            download_button = gr.Button("Prepare zip")
            archive = gr.File(label="Archive")
            download_button.click(download, samples_state, archive, api_name="download")

        with gr.Tab("Model info"):
            gr.Markdown(model_info(pipeline, description))

    return demo.queue(default_concurrency_limit=1, max_size=MAX_QUEUE_SIZE)


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    prevent_thread_lock: bool = False,
) -> None:
    """Start the app's web server with the demo's limits (upload size), its page style and quiet logs.

    Args:
        demo: The app from :func:`build_demo`.
        host: Address to listen on; 127.0.0.1 keeps the demo on this machine, 0.0.0.0 opens it to the network.
        port: Port to listen on (default: Gradio's first free port from 7860).
        share: Create a temporary public gradio.live link (contacts Gradio's servers).
        prevent_thread_lock: Return once the server runs instead of blocking (tests).
    """
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=MAX_UPLOAD_SIZE,
        prevent_thread_lock=prevent_thread_lock,
        quiet=prevent_thread_lock,
        show_error=False,
        css=PAGE_CSS,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``hvae-demo``."""
    parser = argparse.ArgumentParser(prog="hvae-demo", description="Web demo of the HVAE pipeline (Gradio).")
    add_version_option(parser)
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=None, help="port (default: first free port from 7860)")
    parser.add_argument("--share", action="store_true", help="also create a temporary public gradio.live link")
    parser.add_argument("--device", default="cpu", help="device the model runs on, e.g. cuda (default cpu)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Load the model and serve the demo until interrupted.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``); see :func:`build_parser`.

    Returns:
        The exit status: 0, or 2 when the device is not usable or the model cannot be loaded.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_device("--device", args.device)
    except ValueError as error:
        parser.error(str(error))
    try:
        pipeline, description = load_pipeline(args.model)
    except OSError as error:
        parser.exit(2, f"hvae-demo: error: {error}\n")
    pipeline.to(args.device)
    print(f"Serving the {description} on {args.device}")
    launch(build_demo(pipeline, description), host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
