"""Re-render a saved pipeline's model card with the flow it learnt and its held-out results.

    python training/refresh_model_card.py --pipeline runs/cpu-128/pipeline --config cpu-128 \
        --log runs/cpu-128/logs/metrics.csv [--likelihood OUT/likelihood.json --generator NAME] [section.key=value ...]

Training writes a card at export, before any held-out evaluation; this adds a "Held-out evaluation" section from an
``hvae-evaluate likelihood`` summary (log p(x, m), ELBO, the flow's gain with the same weights), records the same
numbers in the card's ``model-index`` (what the Hub shows as evaluation results), and states the learnt step sizes of
the saved weights. Only ``README.md`` changes, replaced atomically.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Sequence

from hvae_pipeline import HVAEModel, HVAEPipeline
from hvae_pipeline.hub.model_card import likelihood_evaluation
from hvae_pipeline.training.config import ConfigError, load_config
from hvae_pipeline.training.model_card import training_data, write_model_card
from hvae_pipeline.training.train_hvae import HVAERun


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, required=True, help="folder written by save_pretrained")
    parser.add_argument("--config", required=True, help="the training config of its last stage")
    parser.add_argument("--log", type=Path, required=True, help="that run's logs/metrics.csv")
    parser.add_argument("--likelihood", type=Path, help="likelihood.json written by `hvae-evaluate likelihood`")
    parser.add_argument("--generator", help="this pipeline's generator name in --likelihood")
    parser.add_argument("--note", default="", help="a sentence added to the evaluation (e.g. the comparison and cost)")
    parser.add_argument("overrides", nargs="*", help="the run's section.key=value overrides")
    args = parser.parse_args(argv)
    if not (args.pipeline / "model_index.json").is_file():
        parser.error(f"--pipeline {args.pipeline}: not a saved pipeline (no model_index.json)")
    if not args.log.is_file():
        parser.error(f"--log {args.log}: no such file (expected the run's logs/metrics.csv)")
    if args.note and args.likelihood is None:
        parser.error("--note goes with --likelihood (it is added to the held-out evaluation)")
    if (args.likelihood is None) != (args.generator is None):
        parser.error("--likelihood and --generator go together")
    try:
        run = HVAERun(load_config(args.config, args.overrides))
    except ConfigError as error:
        parser.error(str(error))
    evaluation = None
    if args.likelihood is not None:
        summary = json.loads(args.likelihood.read_text())
        if args.generator not in summary.get("results", {}):
            parser.error(f"--generator {args.generator}: not in {args.likelihood} (it has "
                         f"{', '.join(summary.get('results', {})) or 'no results'})")
        evaluation = likelihood_evaluation(summary, args.generator, training_data(run.config["data"]).datasets[0],
                                           args.note)
    model = HVAEPipeline.from_pretrained(str(args.pipeline)).model
    if not isinstance(model, HVAEModel):
        parser.error(f"--pipeline {args.pipeline}: a {type(model).__name__}, not an HVAE/VAE")
    with args.log.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    last = rows[-1] if rows else {}
    steps = int(last.get("step", 0))
    seconds = float(last.get("seconds_per_step") or 0) * steps
    card = args.pipeline / "README.md"
    write_model_card(card, run, steps, seconds, last, model.flow_summary(), evaluation)
    print(f"Wrote {card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
