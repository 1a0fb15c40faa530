"""Fixed patient-level splits of the data-scarcity study: a train pool, test patients and recorded draws of K pool
patients, stored as JSON files in ``splits/`` (written once by ``scripts/make_scarcity_splits.py``, which says how
each was chosen)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPLITS_FOLDER = Path(__file__).parent / "splits"
SPLIT_NAMES = ("brats-msd-flair", "lgg-flair-2d")
# The split a data kind uses when none is named.
DEFAULT_SPLITS = {"brats": "brats-msd-flair", "pairs": "lgg-flair-2d"}


@dataclass(frozen=True)
class ScarcitySplit:
    """A dataset's fixed split for the scarcity study.

    Args:
        name: the split's name (its file name without ``.json``).
        pool: patients the training draws come from.
        test: patients every U-Net is scored on (none of them in the pool).
        draws: per K, the recorded draws of K pool patients, in order.
        how: how the split and the draws were chosen, in words.
    """

    name: str
    pool: tuple[str, ...]
    test: tuple[str, ...]
    draws: dict[int, tuple[tuple[str, ...], ...]]
    how: str

    def __post_init__(self) -> None:
        overlap = sorted(set(self.pool) & set(self.test))
        if overlap:
            raise ValueError(f"split {self.name}: test patients {overlap} are also in the pool")
        for k, draws in self.draws.items():
            for draw in draws:
                if len(set(draw)) != k or not set(draw) <= set(self.pool):
                    raise ValueError(f"split {self.name}: draw {list(draw)} is not {k} distinct pool patients")

    def draw(self, k: int, index: int) -> tuple[str, ...]:
        """Draw ``index`` (0-based) of K patients.

        Raises:
            ValueError: the split records no such K or fewer draws.
        """
        if k not in self.draws:
            raise ValueError(f"split {self.name} has no draws of K = {k} patients; recorded K: {sorted(self.draws)}")
        if index >= len(self.draws[k]):
            raise ValueError(f"split {self.name} records {len(self.draws[k])} draw(s) of K = {k} patients, "
                             f"not {index + 1}")
        return self.draws[k][index]


def load_split(name_or_path: str | Path) -> ScarcitySplit:
    """A packaged split by name (:data:`SPLIT_NAMES`) or a split JSON file of the same layout.

    Raises:
        ValueError: an unknown name, a file that is not such a split.
    """
    path = Path(name_or_path)
    if str(name_or_path) in SPLIT_NAMES:
        path = SPLITS_FOLDER / f"{name_or_path}.json"
    elif not path.is_file():
        raise ValueError(f"--split {name_or_path}: neither a packaged split {SPLIT_NAMES} nor a JSON file")
    try:
        content = json.loads(path.read_text())
        return ScarcitySplit(
            name=path.stem, pool=tuple(content["pool"]), test=tuple(content["test"]),
            draws={int(k): tuple(tuple(draw) for draw in draws) for k, draws in content["draws"].items()},
            how=content.get("how", ""))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"split file {path}: expected JSON with pool, test and draws ({error})") from None
