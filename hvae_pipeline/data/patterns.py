"""File patterns with named captures, e.g. ``"images/BRATS_{case}_Tumor.nii.gz"``.

A pattern is a path relative to a root in which ``{name}`` fields stand for one path component fragment (no
``/``). ``{case}`` is the patient id; other fields (``{index}``, ``{modality}``...) are free. A field may appear
several times (``"{case}/{case}_{index}.tif"``): every occurrence must then match the same text. Shell wildcards
(``*``, ``?``, ``[...]``) may be used too; they match without being captured. Hidden files (name starting with
``.``) never match.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingDataError

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _wildcards_to_regex(text: str) -> str:
    """Translate the shell wildcards of a literal pattern fragment to a regex fragment."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in text[i + 1 :]:
            end = text.index("]", i + 1)
            body = text[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def check_not_broken_link(path: Path) -> None:
    """Refuse a symbolic link whose target is gone: skipping it would drop that patient without a word.

    Raises:
        MissingDataError: naming the link and its missing target.
    """
    if path.is_symlink() and not path.exists():
        raise MissingDataError(
            f"{path}: broken symbolic link to {os.readlink(path)}; restore the target or remove the link"
        )


@dataclass(frozen=True)
class CasePattern:
    """A compiled file pattern; see the module docstring for the syntax.

    Args:
        pattern: the pattern, relative to the dataset root, with ``{case}`` and optional other fields.
    """

    pattern: str

    def __post_init__(self) -> None:
        if "{case}" not in self.pattern:
            raise ValueError(f"file pattern {self.pattern!r} must contain a '{{case}}' field for the patient id")

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the fields, in order of first appearance."""
        return tuple(dict.fromkeys(_FIELD.findall(self.pattern)))

    def glob(self) -> str:
        """The pattern as a plain glob (every field becomes ``*``)."""
        return _FIELD.sub("*", self.pattern)

    def regex(self) -> re.Pattern[str]:
        """The pattern as an anchored regex with one named group per field (repeats are back-references)."""
        parts, seen, last = [], set(), 0
        for match in _FIELD.finditer(self.pattern):
            parts.append(_wildcards_to_regex(self.pattern[last : match.start()]))
            name = match.group(1)
            parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+?)")
            seen.add(name)
            last = match.end()
        parts.append(_wildcards_to_regex(self.pattern[last:]))
        return re.compile("".join(parts) + r"\Z")

    def find(self, root: Path) -> dict[Path, dict[str, str]]:
        """Return every file under ``root`` matching the pattern, mapped to its field values, sorted by path.

        Raises:
            MissingDataError: a matching name is a broken symbolic link (:func:`check_not_broken_link`).
        """
        regex = self.regex()
        found = {}
        for path in sorted(root.glob(self.glob())):
            match = regex.match(path.relative_to(root).as_posix())
            # Names starting with "." are skipped: archives made on macOS ship "._<name>" resource forks
            # (the MSD Task01 tarball does) that match the patterns but are not images.
            if not match or path.name.startswith("."):
                continue
            check_not_broken_link(path)
            if path.is_file():
                found[path] = match.groupdict()
        return found

    def format(self, **values: str) -> str:
        """Fill in the fields (e.g. build the label path of a case)."""
        return _FIELD.sub(lambda m: values[m.group(1)], self.pattern)
