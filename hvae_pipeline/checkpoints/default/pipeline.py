"""Lets diffusers' generic loader find this folder's pipeline class (HVAEPipeline) in the installed
hvae-pipeline package:

    DiffusionPipeline.from_pretrained(folder_or_repo_id, trust_remote_code=True)
"""

try:
    from hvae_pipeline import HVAEPipeline  # noqa: F401
except ImportError as error:
    raise ImportError("this pipeline needs the hvae-pipeline package, which is not on PyPI: clone its repository and "
                      "run `pip install -e .` in the checkout") from error
