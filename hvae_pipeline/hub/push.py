"""Hugging Face Hub: clear errors when a pipeline cannot be fetched, and the one path that uploads a pipeline.

:meth:`HVAEPipeline.push_to_hub <hvae_pipeline.HVAEPipeline.push_to_hub>` and the training scripts'
``--push-to-hub`` both end in :func:`upload_pipeline_folder`: one set of options (``private``, ``revision``,
``create_pr``) and one set of messages, distinct for offline, unauthorised and not-found failures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from huggingface_hub import HfApi, ModelCard, constants
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

from .model_card import CARD_FILE, is_own_card, point_card_at

DEFAULT_COMMIT_MESSAGE = "Upload HVAE pipeline"
# Exception classes of the HTTP clients huggingface_hub has used (httpx, requests, urllib3) for a network that cannot be
# reached; matched by name so that the check holds whichever client the installed version uses.
_NETWORK_ERROR_NAMES = {"TransportError", "ConnectionError", "ConnectTimeout", "Timeout", "TimeoutException",
                        "NewConnectionError", "MaxRetryError"}


class HubPushError(OSError):
    """A push that did not happen; the pipeline's local files are untouched."""


class HubOfflineError(HubPushError, ConnectionError):
    """Offline mode is on (``HF_HUB_OFFLINE=1``), or the Hub could not be reached."""


class HubUnauthorisedError(HubPushError, PermissionError):
    """The Hub refused the token (HTTP 401), or the token may not write to the repository (HTTP 403)."""


class HubRepositoryNotFoundError(HubPushError, FileNotFoundError):
    """The repository or revision does not exist, or the token cannot see it (HTTP 404)."""


@dataclass(frozen=True)
class HubTarget:
    """Where a push goes.

    Attributes:
        repo_id: ``"user/name"`` or ``"organisation/name"``; created if it does not exist.
        private: Create the repository private (``None``: the Hub's default, public). An existing repository keeps
            its visibility.
        revision: Branch to push to (created from the default branch when missing); ``None``: the default branch.
        create_pr: Open a pull request with the upload instead of committing to the branch.
    """

    repo_id: str
    private: bool | None = None
    revision: str | None = None
    create_pr: bool = False


def raise_clear_hub_error(name_or_path: str, error: BaseException) -> NoReturn:
    """Re-raise a loading failure as an ``OSError`` saying what was looked for and what to do.

    Args:
        name_or_path: What the caller passed to ``from_pretrained``.
        error: The original exception (kept as the cause).
    """
    if os.path.isdir(name_or_path):
        raise OSError(f"could not load a pipeline from the folder {name_or_path!r}: {error}") from error
    if _is_offline(error):
        raise OSError(
            f"{name_or_path!r} is neither an existing folder nor a pipeline that could be fetched from the Hugging Face "
            "Hub: offline mode is on (HF_HUB_OFFLINE=1) and no repository of that name is in the local cache. Pass "
            "the path of a folder written by `save_pretrained`, or unset HF_HUB_OFFLINE to download it."
        ) from error
    raise OSError(
        f"{name_or_path!r} is neither an existing folder nor a pipeline that could be fetched from the Hugging Face "
        f"Hub ({error.__class__.__name__}). Offline (or with HF_HUB_OFFLINE=1) pass the path of a folder written by "
        "`save_pretrained`; online, check the repository id and your access token."
    ) from error


def upload_pipeline_folder(folder: str | Path, target: HubTarget, token: str | bool | None = None,
                           commit_message: str = DEFAULT_COMMIT_MESSAGE, retry_hint: str = "") -> Any:
    """Create the repository if needed and upload ``folder`` (a saved pipeline with its model card) as one commit.

    Args:
        folder: A folder written by ``save_pretrained`` with hvae-pipeline's ``README.md`` card.
        target: The repository and how to push to it.
        token: Hub token; ``None`` uses ``HF_TOKEN`` or the one saved by ``hf auth login``. Never printed.
        commit_message: The commit's (or pull request's) title.
        retry_hint: A sentence appended to failure messages, saying how to push again later.

    Returns:
        The ``huggingface_hub.CommitInfo`` of the upload (``commit_url``; ``pr_url`` with ``create_pr``).

    Raises:
        ValueError: ``folder`` is not a saved pipeline with a card.
        HubOfflineError, HubUnauthorisedError, HubRepositoryNotFoundError, HubPushError: The push failed; the message
            says why and what to do.
    """
    folder = Path(folder)
    for required in ("model_index.json", CARD_FILE):
        if not (folder / required).is_file():
            raise ValueError(f"{folder} is not a saved pipeline with a model card: it has no {required}")
    if constants.HF_HUB_OFFLINE:  # said before any attempt: huggingface_hub would still try the network to upload
        raise push_failure(OfflineModeIsEnabled("HF_HUB_OFFLINE=1"), target, retry_hint)
    api = HfApi(token=token)
    try:
        api.create_repo(target.repo_id, private=target.private, exist_ok=True)
        if target.revision is not None:
            api.create_branch(target.repo_id, branch=target.revision, exist_ok=True)
        return api.upload_folder(repo_id=target.repo_id, folder_path=str(folder), revision=target.revision,
                                 create_pr=target.create_pr, commit_message=commit_message)
    except Exception as error:  # classified below; anything unrecognised (a bad repo id, a bug) propagates as is
        failure = push_failure(error, target, retry_hint)
        if failure is None:
            raise
        raise failure from error


def push_pipeline_folder(folder: str | Path, target: HubTarget, token: str | bool | None = None,
                         commit_message: str = DEFAULT_COMMIT_MESSAGE) -> Any:
    """Push a saved pipeline folder (e.g. a training run's export) with its card pointed at the repository.

    The folder itself is left untouched: a copy whose card's loading snippet names ``target.repo_id`` is uploaded.

    Args:
        folder: A folder written by ``save_pretrained`` with the card hvae-pipeline renders (``README.md``).
        target, token, commit_message: See :func:`upload_pipeline_folder`.

    Raises:
        ValueError: ``folder`` has no model card, or not hvae-pipeline's (no "not for clinical use", no data licence).
        HubPushError: See :func:`upload_pipeline_folder`.
    """
    folder = Path(folder)
    card_path = folder / CARD_FILE
    if not card_path.is_file() or not is_own_card(ModelCard.load(card_path)):
        raise ValueError(f"{folder} has no model card rendered by hvae-pipeline ({CARD_FILE} with the "
                         "'hvae-pipeline' tag); export it with the training scripts, or load it with "
                         "HVAEPipeline.from_pretrained and call push_to_hub, which renders one")
    with tempfile.TemporaryDirectory(prefix="hvae-push-") as staging:
        copy = Path(staging) / folder.name
        shutil.copytree(folder, copy)
        point_card_at(ModelCard.load(card_path), target.repo_id).save(copy / CARD_FILE)
        return upload_pipeline_folder(copy, target, token, commit_message, retry_hint=(
            f"The local pipeline in {folder} is complete; push it again later with "
            f"`HVAEPipeline.from_pretrained({str(folder)!r}).push_to_hub({target.repo_id!r})`."))


def push_failure(error: BaseException, target: HubTarget, retry_hint: str = "") -> HubPushError | None:
    """The :class:`HubPushError` that explains ``error``, or ``None`` when it is not a Hub or network failure.

    Args:
        error: What ``huggingface_hub`` raised.
        target: The push that failed (named in the message).
        retry_hint: A sentence appended to the message.
    """
    repo = f"the Hub repository {target.repo_id!r}" + (f" (revision {target.revision!r})" if target.revision else "")
    hint = f" {retry_hint}" if retry_hint else ""
    status = _status_code(error)
    if _is_offline(error):
        return HubOfflineError(f"could not push to {repo}: offline mode is on (HF_HUB_OFFLINE=1). Unset it to push."
                               + hint)
    if isinstance(error, GatedRepoError) or status in (401, 403):
        return HubUnauthorisedError(
            f"could not push to {repo}: the Hub refused the token (HTTP {status}). Log in with `hf auth login` or "
            "set HF_TOKEN to a token with write access to that namespace." + hint)
    if isinstance(error, RepositoryNotFoundError) or status == 404:
        return HubRepositoryNotFoundError(
            f"could not push to {repo}: not found (HTTP 404). Check the user or organisation name and the revision, "
            "and that the token can see the repository." + hint)
    if _is_network_error(error):
        return HubOfflineError(f"could not push to {repo}: the Hub is unreachable ({error.__class__.__name__}). "
                               "Check the network connection." + hint)
    if isinstance(error, HfHubHTTPError):
        return HubPushError(f"could not push to {repo}: the Hub answered HTTP {status}: {error}." + hint)
    return None


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--push-to-hub REPO_ID`` and its options (``--hub-private``, ``--hub-revision``, ``--hub-create-pr``)."""
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                        help="upload the final pipeline with its model card to this Hub repository")
    parser.add_argument("--hub-private", action="store_true", help="with --push-to-hub: create the repository private")
    parser.add_argument("--hub-revision", default=None, metavar="BRANCH",
                        help="with --push-to-hub: push to this branch (created if missing)")
    parser.add_argument("--hub-create-pr", action="store_true",
                        help="with --push-to-hub: open a pull request instead of committing")


def hub_target_from_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> HubTarget | None:
    """The :class:`HubTarget` of the options :func:`add_push_arguments` added (``None`` without ``--push-to-hub``);
    exits through ``parser.error`` when a ``--hub-*`` option comes without ``--push-to-hub``."""
    if args.push_to_hub is None:
        given = [option for option, value in (("--hub-private", args.hub_private), ("--hub-revision", args.hub_revision),
                                              ("--hub-create-pr", args.hub_create_pr)) if value]
        if given:
            parser.error(f"{', '.join(given)}: only with --push-to-hub REPO_ID")
        return None
    return HubTarget(args.push_to_hub, private=args.hub_private or None, revision=args.hub_revision,
                     create_pr=args.hub_create_pr)


def _is_offline(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) comes from offline mode (``HF_HUB_OFFLINE=1``)."""
    return constants.HF_HUB_OFFLINE or any(isinstance(cause, OfflineModeIsEnabled) for cause in _causes(error))


def _is_network_error(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a network failure: refused connection, DNS, timeout."""
    return any(isinstance(cause, (ConnectionError, TimeoutError))
               or any(kind.__name__ in _NETWORK_ERROR_NAMES for kind in type(cause).__mro__)
               for cause in _causes(error))


def _status_code(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain
