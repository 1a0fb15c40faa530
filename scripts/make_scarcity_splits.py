"""Write the fixed patient-level splits and training draws of the data-scarcity study (hvae-evaluate scarcity).

Run once; the files it writes are committed under hvae_pipeline/evaluation/splits/ and never regenerated for a study
in progress (they define which patients train and which test)::

    .venv/bin/python scripts/make_scarcity_splits.py

- brats-msd-flair: the fixed split of ../shared/data/README.md: the 10 ``train`` patients are the pool, the 6 ``val``
  patients the test set.
- lgg-flair-2d: the 40 patient folders, sorted, shuffled with numpy's ``default_rng(24)``; the first 20 are the test
  set, the other 20 the pool.
- draws: for each K in 1, 2, 4, 10, ``DRAWS_PER_K`` distinct sets of K pool patients drawn without replacement by
  ``default_rng([24, K])`` (one draw when K is the whole pool), each stored sorted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hvae_pipeline.storage.atomic_write import write_json_atomically

SPLITS = Path(__file__).resolve().parents[1] / "hvae_pipeline" / "evaluation" / "splits"
SEED = 24
KS = (1, 2, 4, 10)
DRAWS_PER_K = 3
BRATS_TRAIN = [f"BRATS_{p}" for p in "001 002 004 008 009 011 017 027 030 033".split()]
BRATS_VAL = [f"BRATS_{p}" for p in "036 050 082 089 190 259".split()]


def draws(pool: list[str]) -> dict[str, list[list[str]]]:
    """``DRAWS_PER_K`` distinct sorted draws of K pool patients per K (one when K is the whole pool)."""
    by_k = {}
    for k in KS:
        rng = np.random.default_rng([SEED, k])
        chosen: list[list[str]] = []
        wanted = 1 if k == len(pool) else DRAWS_PER_K
        while len(chosen) < wanted:
            draw = sorted(rng.choice(pool, size=k, replace=False).tolist())
            if draw not in chosen:
                chosen.append(draw)
        by_k[str(k)] = chosen
    return by_k


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lgg-root", type=Path, default=Path("../shared/data/lgg-flair-2d"))
    args = parser.parse_args(argv)
    lgg = sorted(folder.name for folder in args.lgg_root.iterdir() if folder.is_dir())
    if len(lgg) != 40:
        raise SystemExit(f"{args.lgg_root}: expected 40 patient folders, found {len(lgg)}")
    shuffled = np.random.default_rng(SEED).permutation(lgg).tolist()
    lgg_test, lgg_pool = sorted(shuffled[:20]), sorted(shuffled[20:])
    common = {"ks": list(KS), "seed": SEED, "made_by": "scripts/make_scarcity_splits.py"}
    write_json_atomically(SPLITS / "brats-msd-flair.json", {
        "dataset": "brats-msd-flair", "data": "brats",
        "how": "the fixed split of ../shared/data/README.md: pool = its 10 train patients, test = its 6 val patients",
        "pool": BRATS_TRAIN, "test": BRATS_VAL, "draws": draws(BRATS_TRAIN), **common})
    write_json_atomically(SPLITS / "lgg-flair-2d.json", {
        "dataset": "lgg-flair-2d", "data": "pairs",
        "how": f"the 40 patient folders sorted, shuffled by numpy default_rng({SEED}); the first 20 are the test "
               "patients, the other 20 the pool",
        "pool": lgg_pool, "test": lgg_test, "draws": draws(lgg_pool), **common})
    print(f"wrote {SPLITS}/brats-msd-flair.json and lgg-flair-2d.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
