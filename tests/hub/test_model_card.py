"""``model_card.md`` at the repository root: the bundled (flagship) model's card as a push publishes it, rendered from
the same template as every card, with the numbers the README quotes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hvae_pipeline import HVAEPipeline
from hvae_pipeline.hub.bundled_checkpoint import BUNDLED_CHECKPOINT, has_bundled_checkpoint
from hvae_pipeline.hub.model_card import (
    FLAGSHIP_REPO_ID,
    TEMPLATE,
    flagship_model_card,
    own_model_card,
    point_card_at,
)

REPOSITORY = Path(__file__).resolve().parents[2]
ROOT_CARD = REPOSITORY / "model_card.md"
REGENERATE = ('.venv/bin/python -c "from hvae_pipeline.hub.model_card import flagship_model_card; '
              "flagship_model_card().save('model_card.md')\"")

pytestmark = pytest.mark.skipif(not has_bundled_checkpoint(), reason="no default model is bundled in this checkout")


def test_root_card_is_the_bundled_card_as_a_push_publishes_it():
    expected = flagship_model_card().content
    assert ROOT_CARD.read_text() == expected, f"model_card.md is stale: regenerate it with {REGENERATE}"
    pipeline = HVAEPipeline.from_pretrained(str(BUNDLED_CHECKPOINT))
    assert point_card_at(own_model_card(pipeline), FLAGSHIP_REPO_ID).content == expected  # push_to_hub's card
    assert f'DiffusionPipeline.from_pretrained("{FLAGSHIP_REPO_ID}", trust_remote_code=True)' in expected


def test_bundled_card_is_rendered_from_the_current_template():
    """Every line of the template without a field or a tag is in the card, in the template's order."""
    card = (BUNDLED_CHECKPOINT / "README.md").read_text().splitlines()
    position = 0
    for line in TEMPLATE.read_text().splitlines():
        if not line.strip() or "{{" in line or "{%" in line or line == "---":
            continue
        assert line in card[position:], f"the bundled card lacks the template's line {line!r}: re-render it"
        position = card.index(line, position) + 1


def test_root_card_holds_metadata_held_out_numbers_and_the_required_sections():
    card = ModelCard.load(ROOT_CARD)
    assert card.data.license == "cc-by-sa-4.0" and card.data.library_name == "diffusers"
    assert card.data.datasets == ["msd-task01"] and "hvae-pipeline" in card.data.tags
    results = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert set(results) == {"log_likelihood", "elbo", "flow_gain"}
    for section in ("## Training data", "## Held-out evaluation", "## Intended use", "## Out of scope and limitations",
                    "## Citation"):
        assert section in card.text
    assert "Not for clinical use" in card.text and "CC BY-SA 4.0" in card.text
    # The held-out numbers the card's table and the README's table give are the model-index's.
    flow_gain = f"{results['flow_gain']:.1f}"
    assert f"| flow gain (ELBO on - off, paired) | {flow_gain} ± " in card.text
    readme = (REPOSITORY / "README.md").read_text()
    assert re.search(rf"\*\*\+{re.escape(flow_gain)} ± 3\.5\*\* nats/slice", readme)
