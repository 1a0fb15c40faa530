"""The one Hub push path (Python and training) against a local stand-in of the Hub: what is uploaded (our card, with
its metadata), the options, and a distinct message per failure. No network: HfApi's methods are replaced."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

from hvae_pipeline import HVAEModel, HVAEPipeline, LSGANModel
from hvae_pipeline.hub.push import (
    HubOfflineError,
    HubPushError,
    HubRepositoryNotFoundError,
    HubTarget,
    HubUnauthorisedError,
    add_push_arguments,
    hub_target_from_arguments,
    push_pipeline_folder,
)
from hvae_pipeline.hub.model_card import hub_repo_of_folder, likelihood_evaluation
from hvae_pipeline.training import train_hvae
from hvae_pipeline.training.publish import EXIT_PUSH_FAILED

TINY_RUN = ["--config", "phantom-tiny", "model.sample_size=16", "data.size=16", "data.num_phantom_slices=48",
            "training.batch_size=8", "training.num_threads=1", "training.max_steps=2"]


class FakeHub:
    """Stands in for the Hub: records each call and what each upload held, or raises ``error`` at ``failing``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploads: list[dict[str, str]] = []
        self.error: BaseException | None = None
        self.failing = "create_repo"

    def _call(self, name: str, **arguments) -> None:
        self.calls.append((name, arguments))
        if self.error is not None and name == self.failing:
            raise self.error

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "FakeHub":
        hub = self

        def create_repo(api, repo_id, **arguments):
            hub._call("create_repo", repo_id=repo_id, **arguments)
            return f"https://huggingface.co/{repo_id}"

        def create_branch(api, repo_id, **arguments):
            hub._call("create_branch", repo_id=repo_id, **arguments)

        def upload_folder(api, **arguments):
            hub._call("upload_folder", **arguments)
            folder = Path(arguments["folder_path"])  # a temporary folder: keep what it held
            hub.uploads.append({str(path.relative_to(folder)): path.read_bytes().decode("utf-8", "replace")
                                for path in sorted(folder.rglob("*")) if path.is_file()})
            commit = f"https://huggingface.co/{arguments['repo_id']}/commit/0123abcd"
            pull = f"https://huggingface.co/{arguments['repo_id']}/discussions/1" if arguments["create_pr"] else None
            return argparse.Namespace(commit_url=commit, pr_url=pull)

        for name, method in (("create_repo", create_repo), ("create_branch", create_branch),
                             ("upload_folder", upload_folder)):
            monkeypatch.setattr(HfApi, name, method)
        return self

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def arguments(self, name: str) -> dict:
        return next(arguments for called, arguments in self.calls if called == name)


def http_error(kind: type[HfHubHTTPError], status: int) -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return kind(f"{status} Client Error", response=httpx2.Response(status, request=request))


@pytest.fixture(autouse=True)
def online_hub_settings(monkeypatch) -> None:
    """These tests fake the Hub online, whatever the user's ``HF_*`` variables say: huggingface_hub reads
    ``HF_HUB_OFFLINE`` into ``constants`` at import, so the constant is set too."""
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub(monkeypatch) -> FakeHub:
    return FakeHub().install(monkeypatch)


@pytest.fixture
def pipeline(tiny_config) -> HVAEPipeline:
    torch.manual_seed(0)
    return HVAEPipeline(HVAEModel(**tiny_config).eval())


def test_python_push_uploads_our_card_with_the_options(pipeline, hub):
    commit = pipeline.push_to_hub("me/hvae", private=True, revision="v1", create_pr=True, token="hf_fake")
    assert hub.names() == ["create_repo", "create_branch", "upload_folder"]
    assert hub.arguments("create_repo") == dict(repo_id="me/hvae", private=True, exist_ok=True)
    assert hub.arguments("create_branch") == dict(repo_id="me/hvae", branch="v1", exist_ok=True)
    upload = hub.arguments("upload_folder")
    assert (upload["repo_id"], upload["revision"], upload["create_pr"]) == ("me/hvae", "v1", True)
    assert commit.pr_url.endswith("/discussions/1")
    files = hub.uploads[0]
    assert {"model_index.json", "pipeline.py", "README.md", "model/config.json",
            "model/diffusion_pytorch_model.safetensors"} <= set(files)
    card = files["README.md"]
    assert "**Not for clinical use.**" in card and "Licence of the training data: unknown" in card
    assert 'DiffusionPipeline.from_pretrained("me/hvae", trust_remote_code=True)' in card
    data = ModelCard(card).data
    assert data.library_name == "diffusers" and "hvae-pipeline" in data.tags and data.license == "unknown"
    assert data.pipeline_tag == "unconditional-image-generation"


def test_python_push_keeps_the_card_of_the_folder_it_was_loaded_from(pipeline, hub, tmp_path):
    """A training card (data licence, datasets, measured results) survives a load and a push from Python."""
    folder = tmp_path / "trained"
    pipeline.save_pretrained(folder)
    bundled = (Path(__file__).resolve().parents[2] / "hvae_pipeline" / "checkpoints" / "default" / "README.md")
    shutil.copy(bundled, folder / "README.md")
    HVAEPipeline.from_pretrained(folder).push_to_hub("me/hvae")
    assert "create_branch" not in hub.names()  # no revision: the default branch
    assert hub.arguments("upload_folder")["revision"] is None and hub.arguments("create_repo")["private"] is None
    card = ModelCard(hub.uploads[0]["README.md"])
    assert card.data.license == "cc-by-sa-4.0" and card.data.datasets == ["msd-task01"]
    assert {result.metric_type for result in card.data.eval_results} == {"log_likelihood", "elbo", "flow_gain"}
    assert 'from_pretrained("me/hvae", trust_remote_code=True)' in card.text and "path/to/this/folder" not in card.text
    assert "path/to/this/folder" in (folder / "README.md").read_text()  # the local folder is untouched


def test_save_pretrained_with_push_to_hub_takes_the_same_path(pipeline, hub, tmp_path):
    pipeline.save_pretrained(tmp_path / "hvae-local", push_to_hub=True, private=True)
    assert hub.arguments("create_repo") == dict(repo_id="hvae-local", private=True, exist_ok=True)
    assert "**Not for clinical use.**" in hub.uploads[0]["README.md"]


def test_an_lsgan_pipeline_gets_a_card_too(tiny_config, hub):
    HVAEPipeline(LSGANModel(**tiny_config)).push_to_hub("me/lsgan")
    card = hub.uploads[0]["README.md"]
    assert "a least-squares GAN that produces paired 2D" in card and "**Not for clinical use.**" in card


def test_a_card_states_a_wider_decoders_own_widths(tiny_config, hub):
    HVAEPipeline(HVAEModel(**tiny_config, decoder_block_out_channels=(16, 32))).push_to_hub("me/wide")
    card = hub.uploads[0]["README.md"]
    assert "channels\n  (8, 16) in the encoder, (16, 32) in the decoder, 1 residual block(s)" in card
    HVAEPipeline(HVAEModel(**tiny_config)).push_to_hub("me/mirrored")
    assert "channels\n  (8, 16), 1 residual block(s)" in hub.uploads[1]["README.md"]


@pytest.mark.parametrize(
    "error, failing, expected, message",
    [
        (OfflineModeIsEnabled("offline"), "create_repo", HubOfflineError,
         r"could not push to the Hub repository 'me/hvae': offline mode is on \(HF_HUB_OFFLINE=1\)"),
        (ConnectionError("connection refused"), "upload_folder", HubOfflineError,
         r"the Hub is unreachable \(ConnectionError\)"),
        (httpx2.ConnectError("name resolution failed"), "create_repo", HubOfflineError, r"the Hub is unreachable"),
        (http_error(HfHubHTTPError, 401), "create_repo", HubUnauthorisedError,
         r"the Hub refused the token \(HTTP 401\)\. Log in with `hf auth login`"),
        (http_error(HfHubHTTPError, 403), "upload_folder", HubUnauthorisedError, r"refused the token \(HTTP 403\)"),
        (http_error(RepositoryNotFoundError, 404), "create_repo", HubRepositoryNotFoundError,
         r"not found \(HTTP 404\)\. Check the user or organisation name"),
        (http_error(HfHubHTTPError, 500), "upload_folder", HubPushError, r"the Hub answered HTTP 500"),
    ],
)
def test_push_failures_are_told_apart(pipeline, hub, error, failing, expected, message):
    hub.error, hub.failing = error, failing
    with pytest.raises(expected, match=message) as raised:
        pipeline.push_to_hub("me/hvae")
    assert type(raised.value) is expected and raised.value.__cause__ is error
    assert "save_pretrained(folder)` and push it again later" in str(raised.value)


def test_failure_messages_differ_by_cause_and_keep_their_builtin_families(pipeline, hub):
    messages = {}
    for error in (OfflineModeIsEnabled("offline"), http_error(HfHubHTTPError, 401),
                  http_error(RepositoryNotFoundError, 404)):
        hub.error = error
        with pytest.raises(HubPushError) as raised:
            pipeline.push_to_hub("me/hvae")
        messages[type(raised.value)] = str(raised.value)
    assert len(set(messages.values())) == 3
    assert issubclass(HubOfflineError, ConnectionError) and issubclass(HubUnauthorisedError, PermissionError)
    assert issubclass(HubRepositoryNotFoundError, FileNotFoundError)


def test_an_unrelated_error_is_not_disguised(pipeline, hub):
    hub.error = ValueError("Repo id must be in the form 'repo_name' or 'namespace/repo_name'")
    with pytest.raises(ValueError, match="Repo id must be in the form"):
        pipeline.push_to_hub("not a repo id")


def test_a_folder_push_needs_our_card_and_leaves_the_folder_alone(pipeline, hub, tmp_path):
    folder = tmp_path / "pipeline"
    pipeline.save_pretrained(folder)
    with pytest.raises(ValueError, match="has no model card rendered by hvae-pipeline"):
        push_pipeline_folder(folder, HubTarget("me/hvae"))
    ModelCard("---\nlibrary_name: diffusers\n---\n# A generic card\n").save(folder / "README.md")
    with pytest.raises(ValueError, match="has no model card rendered by hvae-pipeline"):
        push_pipeline_folder(folder, HubTarget("me/hvae"))
    assert hub.calls == []


def test_training_pushes_its_export_with_the_options(tmp_path, hub, capsys):
    code = train_hvae.main([*TINY_RUN, f"training.output_dir={tmp_path}", "--push-to-hub", "me/hvae-run",
                            "--hub-private", "--hub-revision", "stage-2"])
    assert code == 0
    assert hub.arguments("create_repo") == dict(repo_id="me/hvae-run", private=True, exist_ok=True)
    assert hub.arguments("upload_folder")["revision"] == "stage-2"
    card = ModelCard(hub.uploads[0]["README.md"])
    assert card.data.datasets == ["phantom"] and "Licence of the training data" in card.text
    assert 'from_pretrained("me/hvae-run", trust_remote_code=True)' in card.text
    assert "Pushed" in capsys.readouterr().out
    assert "path/to/this/folder" in (tmp_path / "pipeline" / "README.md").read_text()


def test_training_push_failure_says_why_and_keeps_the_export(tmp_path, hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_never_printed")
    hub.error = http_error(HfHubHTTPError, 403)
    code = train_hvae.main([*TINY_RUN, f"training.output_dir={tmp_path}", "--push-to-hub", "me/hvae-run"])
    assert code == EXIT_PUSH_FAILED
    captured = capsys.readouterr()
    assert "could not push to the Hub repository 'me/hvae-run': the Hub refused the token (HTTP 403)" in captured.err
    assert f"The local pipeline in {tmp_path / 'pipeline'} is complete" in captured.err
    assert "hf_secret_value_never_printed" not in captured.out + captured.err
    assert HVAEPipeline.from_pretrained(tmp_path / "pipeline").model.config.sample_size == 16


def test_hub_options_need_push_to_hub():
    parser = argparse.ArgumentParser(prog="train")
    add_push_arguments(parser)
    assert hub_target_from_arguments(parser, parser.parse_args([])) is None
    assert hub_target_from_arguments(parser, parser.parse_args(["--push-to-hub", "me/x", "--hub-create-pr"])) == \
        HubTarget("me/x", create_pr=True)
    with pytest.raises(SystemExit):
        hub_target_from_arguments(parser, parser.parse_args(["--hub-private", "--hub-revision", "v2"]))


def test_measured_results_become_the_model_index():
    summary = {"data": "brats, 6 test patients", "settings": {"num_importance_samples": 128, "elbo_draws": 4},
               "results": {"H": {"num_slices": 162, "importance_slices": 24, "log_likelihood_mean": -2502.37,
                                 "elbo_mean": -2647.9, "elbo_flow_off_mean": -2690.3, "flow_gain_mean": 42.39,
                                 "flow_gain_standard_error": 3.5, "n_leapfrog": 3}}}
    evaluation = likelihood_evaluation(summary, "H", "msd-task01", "Cost: 9x.")
    assert evaluation.description.endswith("(`hvae-evaluate likelihood`). Cost: 9x.")
    assert [(r.metric_type, r.metric_value, r.dataset_type, r.dataset_split) for r in evaluation.results] == [
        ("log_likelihood", -2502.37, "msd-task01", "test"), ("elbo", -2647.9, "msd-task01", "test"),
        ("flow_gain", 42.39, "msd-task01", "test")]
    assert ("flow gain (ELBO on - off, paired)", "42.4 ± 3.5 (s.e.) nats/slice") in evaluation.rows


def test_base_model_is_the_hub_repository_a_folder_was_downloaded_from(tmp_path):
    snapshot = tmp_path / "hub" / "models--someone--hvae-stage1" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    assert hub_repo_of_folder(snapshot) == "someone/hvae-stage1"
    assert hub_repo_of_folder(tmp_path / "runs" / "stage1" / "pipeline") is None
