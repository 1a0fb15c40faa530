"""Saving, loading and pushing a pipeline's folder: the diffusers plumbing of :class:`~hvae_pipeline.HVAEPipeline`.

A saved folder carries a small ``pipeline.py`` that names the pipeline class, and its ``model_index.json`` points to
it, so that diffusers' generic loader finds the class in a fresh process:
``DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)``. Loading through the class itself runs
no file of the folder, checks the loaded weights, and says clearly why a folder or repository could not be read.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from diffusers import ModelMixin

from ..storage.atomic_write import write_text_atomically
from .model_card import CARD_FILE, own_model_card, pipeline_model_card, point_card_at
from .push import DEFAULT_COMMIT_MESSAGE, HubTarget, raise_clear_hub_error, upload_pipeline_folder
from .weights_check import check_loaded_weights

# diffusers' generic loader reads `"_class_name": [module, class]` in model_index.json as "the class `class` of the
# file `module.py` beside the weights" (its custom-pipeline layout); the file only imports the installed package.
GENERIC_LOADER_MODULE = "pipeline"
GENERIC_LOADER_SOURCE = '''"""Lets diffusers' generic loader find this folder's pipeline class (HVAEPipeline) in the installed
hvae-pipeline package:

    DiffusionPipeline.from_pretrained(folder_or_repo_id, trust_remote_code=True)
"""

try:
    from hvae_pipeline import HVAEPipeline  # noqa: F401
except ImportError as error:
    raise ImportError("this pipeline needs the hvae-pipeline package, which is not on PyPI: clone its repository and "
                      "run `pip install -e .` in the checkout") from error
'''


class PipelineFilesMixin:
    """``from_pretrained``, ``save_pretrained`` and ``push_to_hub`` for a ``DiffusionPipeline`` subclass.

    Listed before ``DiffusionPipeline`` among the bases (``class HVAEPipeline(PipelineFilesMixin,
    DiffusionPipeline)``): each method adds hvae-pipeline's behaviour around diffusers' own.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """Load a saved pipeline from a local folder or a Hub repository id.

        Folders of every version load, whether their ``model_index.json`` names ``"HVAEPipeline"`` (before the
        generic loader was supported) or ``["pipeline", "HVAEPipeline"]``; no file of the folder is run.

        Args:
            pretrained_model_name_or_path: A folder written by ``save_pretrained`` or a Hub id ``"user/repo"``.
            **kwargs: Passed on to ``DiffusionPipeline.from_pretrained`` (``dtype``, ``local_files_only``, ...).

        Raises:
            OSError: With a message saying what was looked for, when the folder does not exist and the Hub cannot be
                reached (offline mode: said so) or has no such repository.
            CorruptWeightsError: (an ``OSError``) When a component's weights file lacks tensors of the model or holds
                tensors it does not have (diffusers only warns: the layer would stay random), or a weight is not finite.
        """
        try:
            pipeline = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (OSError, ConnectionError, ValueError) as error:
            raise_clear_hub_error(str(pretrained_model_name_or_path), error)
        for name, component in pipeline.components.items():
            if isinstance(component, ModelMixin):
                check_loaded_weights(component, name)
        return pipeline

    @classmethod
    def _dict_from_json_file(cls, json_file: str | os.PathLike) -> dict[str, Any]:
        """Read ``model_index.json``; loading through this class itself needs no code from the folder.

        diffusers runs the ``pipeline.py`` that ``"_class_name": ["pipeline", "HVAEPipeline"]`` names (and demands
        ``trust_remote_code=True``) even when the caller already is that class; naming the class alone skips it.
        """
        config = super()._dict_from_json_file(json_file)
        class_name = config.get("_class_name")
        if isinstance(class_name, list) and class_name[-1] == cls.__name__:
            config["_class_name"] = cls.__name__
        return config

    def to_json_string(self) -> str:
        """The ``model_index.json`` text, naming the class as ``[GENERIC_LOADER_MODULE, class]`` (see
        :meth:`save_config`)."""
        index = json.loads(super().to_json_string())
        index["_class_name"] = [GENERIC_LOADER_MODULE, type(self).__name__]
        return json.dumps(index, indent=2, sort_keys=True) + "\n"

    def save_config(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> None:
        """Write ``model_index.json`` and, first, the ``pipeline.py`` it names for diffusers' generic loader.

        ``save_pretrained`` ends with it, so every saved folder loads with ``HVAEPipeline.from_pretrained(folder)``
        and, in any process where hvae-pipeline is installed, with
        ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``.
        """
        loader = Path(save_directory) / f"{GENERIC_LOADER_MODULE}.py"
        loader.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(loader, GENERIC_LOADER_SOURCE)
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True,
                        variant: str | None = None, max_shard_size: int | str | None = None,
                        push_to_hub: bool = False, **kwargs: Any) -> None:
        """Save the components (safetensors), ``model_index.json`` and ``pipeline.py`` (see :meth:`save_config`).

        Args:
            save_directory: The folder (created if missing).
            safe_serialization, variant, max_shard_size: As in ``DiffusionPipeline.save_pretrained``.
            push_to_hub: Then push it with :meth:`push_to_hub`, hvae-pipeline's card included (``repo_id`` defaults to
                the folder's name).
            **kwargs: With ``push_to_hub``: :meth:`push_to_hub`'s arguments (``repo_id``, ``private``, ...).
        """
        super().save_pretrained(save_directory, safe_serialization=safe_serialization, variant=variant,
                                max_shard_size=max_shard_size)
        if push_to_hub:
            self.push_to_hub(kwargs.pop("repo_id", Path(save_directory).name), **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        token: str | bool | None = None,
        commit_message: str = DEFAULT_COMMIT_MESSAGE,
    ) -> Any:
        """Upload the pipeline (safetensors weights, configs, ``pipeline.py``) with hvae-pipeline's model card.

        The card is the one of the folder the pipeline was loaded from when hvae-pipeline rendered it (training's,
        with its data licence and measured results), else one rendered from the pipeline; its loading snippet names
        ``repo_id``. Nothing is written outside a temporary folder.

        Args:
            repo_id: ``"user/name"`` or ``"organisation/name"``; created if it does not exist.
            private: Create the repository private (an existing one keeps its visibility).
            revision: Branch to push to (created if missing); default the main branch.
            create_pr: Open a pull request instead of committing.
            token: Hub token; default ``HF_TOKEN`` or ``hf auth login``'s.
            commit_message: The commit's or pull request's title.

        Returns:
            The upload's ``huggingface_hub.CommitInfo`` (``commit_url``, ``pr_url``).

        Raises:
            HubOfflineError: (a ``ConnectionError``) Offline mode is on, or the Hub is unreachable.
            HubUnauthorisedError: (a ``PermissionError``) The token is missing, invalid or may not write there.
            HubRepositoryNotFoundError: (a ``FileNotFoundError``) No such namespace, repository or revision.
            HubPushError: Any other refusal by the Hub (the base class of the three above).
        """
        target = HubTarget(repo_id, private=private, revision=revision, create_pr=create_pr)
        card = own_model_card(self)
        card = point_card_at(card, repo_id) if card is not None else pipeline_model_card(self, location=repo_id)
        with tempfile.TemporaryDirectory(prefix="hvae-push-") as folder:
            self.save_pretrained(folder)
            card.save(Path(folder) / CARD_FILE)
            return upload_pipeline_folder(folder, target, token, commit_message, retry_hint=(
                "Save the pipeline with `save_pretrained(folder)` and push it again later."))
