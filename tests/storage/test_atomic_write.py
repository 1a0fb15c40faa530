"""The one atomic file writer: complete files or the previous ones, never a temporary left behind, usual permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from hvae_pipeline.storage.atomic_write import atomic_file, write_json_atomically, write_text_atomically


def test_a_written_file_replaces_the_previous_one_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "deeper" / "report.md"
    write_text_atomically(target, "first\n")
    write_text_atomically(target, "second\n")
    assert target.read_text() == "second\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.md"]


def test_a_failure_while_writing_keeps_the_previous_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "records.json"
    write_json_atomically(target, {"dice": 0.5})
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_file(target) as file:
            file.write('{"dice": 0.')
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"dice": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.json"]


def test_new_files_get_the_permissions_open_would_give_them(tmp_path):
    previous = os.umask(0o022)
    try:
        write_text_atomically(tmp_path / "card.md", "card")
        with atomic_file(tmp_path / "plot.png", "wb") as file:
            file.write(b"\x89PNG")
    finally:
        os.umask(previous)
    for name in ("card.md", "plot.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644  # mkstemp alone would give 0o600


def test_json_is_strict_non_finite_numbers_become_null_and_tuples_lists(tmp_path):
    write_json_atomically(tmp_path / "summary.json", {"mean": float("nan"), "seeds": (0, 1), "std": float("inf")})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"mean": None, "seeds": [0, 1], "std": None}
