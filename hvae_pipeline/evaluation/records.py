"""One JSON record per finished run, written atomically: what makes evaluations resumable.

A run is done when its record exists. Each record keeps the settings it was made with; finding a record whose
settings differ from the current ones is an error (mixing them in one table would compare unlike runs), so a new
setting needs a new output folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..storage.atomic_write import json_ready, write_json_atomically


class SettingsMismatch(ValueError):
    """A finished run in the output folder was made with other settings than the current ones."""


class RecordStore:
    """The records of an output folder's ``runs/`` subfolder.

    Args:
        folder: the ``runs`` folder (created on first write).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        """File of the run ``key``."""
        return self.folder / f"{key}.json"

    def finished(self, key: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The record of run ``key`` if it is finished, else ``None``.

        Raises:
            SettingsMismatch: the record exists but was made with other ``settings`` (the message lists them).
        """
        path = self.path(key)
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        expected = json_ready(settings)
        if record.get("settings") != expected:
            stored = record.get("settings") or {}
            differing = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
            raise SettingsMismatch(
                f"{path} is a finished run made with other settings ({', '.join(differing)} differ: "
                f"{ {k: stored.get(k) for k in differing} } there, { {k: expected.get(k) for k in differing} } now). "
                "Use a new output folder, or delete the old runs to redo them"
            )
        return record

    def save(self, key: str, settings: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
        """Write the record ``{"key", "settings", **results}`` of a finished run atomically and return it."""
        record = json_ready({"key": key, "settings": settings, **results})
        write_json_atomically(self.path(key), record)
        return record
