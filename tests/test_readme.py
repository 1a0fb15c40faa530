"""The README is a short user guide whose every snippet runs as written.

Each fenced block is ``python`` or ``bash``. A second word in its info string marks a block that is not run as
written: ``slow`` (setup, training or evaluation: minutes to hours, and the README says so), ``server`` (serves until
interrupted) and ``hub`` (needs the Hugging Face Hub and a token). The other blocks run in README order in one
throw-away folder (a later block may use an earlier one's files), each in a fresh process with a time limit; the
own-data training command, ``slow`` as written, runs too, cut short with ``training.max_steps``, because the next
block samples from its output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
MAX_LINES = 250
TWO_COMMANDS = ("bash scripts/setup.sh && .venv/bin/hvae-generate --num-samples 16 --out samples --overwrite",
                "bash .ci/run")
NOT_RUN_MARKERS = {"slow", "server", "hub"}
# Each block takes well under a minute on 2 idle CPU cores; the limit leaves room for a busy machine.
SNIPPET_TIMEOUT_S = 180
# The slow own-data training command runs as a smoke test with these overrides appended.
SMOKE_RUNS = {"hvae-train --config pairs-128": " training.max_steps=2"}
FENCE = re.compile(r"^```(\S+)[ \t]*(\S*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Snippet:
    language: str
    marker: str
    code: str
    line: int

    @property
    def smoke_overrides(self) -> str | None:
        """The overrides that cut a slow training command short, when this block is one."""
        return next((extra for command, extra in SMOKE_RUNS.items() if command in self.code), None)

    @property
    def runs(self) -> bool:
        return not self.marker or self.smoke_overrides is not None


def readme_snippets() -> list[Snippet]:
    text = README.read_text()
    return [Snippet(match[1], match[2], match[3], text.count("\n", 0, match.start()) + 1)
            for match in FENCE.finditer(text)]


def test_readme_is_a_short_guide_that_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings[0] == "Two commands"
    for section in ("The bundled model", "Python API", "Train on your own data", "Evaluate", "Demo",
                    "Where the data come from", "Where the results are"):
        assert section in headings, f"no '## {section}' section"
    first = readme_snippets()[0]
    assert [line for line in first.code.splitlines() if line and not line.startswith("#")] == list(TWO_COMMANDS)
    assert "pip install hvae-pipeline" not in text  # there is no such package on PyPI


def test_every_block_is_python_or_bash_and_says_whether_it_runs():
    for snippet in readme_snippets():
        assert snippet.language in ("python", "bash"), f"README line {snippet.line}: ```{snippet.language}"
        assert not snippet.marker or snippet.marker in NOT_RUN_MARKERS, f"README line {snippet.line}: {snippet.marker}"
    assert sum(snippet.runs for snippet in readme_snippets()) >= 6


@pytest.mark.parametrize("page", ["README.md", "docs/training.md", "docs/evaluation.md", "docs/design.md"])
def test_local_links_and_pictures_exist(page: str):
    path = REPOSITORY / page
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text())
    local = [target for target in targets if not re.match(r"[a-z]+://", target)]
    assert local and [target for target in local if not (path.parent / target).exists()] == []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where ``.venv/bin`` holds this interpreter's commands, as in a checkout set up by the README."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / ".venv").mkdir()
    (folder / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    return folder


def run_snippet(snippet: Snippet, folder: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(folder / "hf-home")}
    if snippet.language == "python":
        command = [sys.executable, "-c", snippet.code]
    else:
        command = ["bash", "-euo", "pipefail", "-c", snippet.code.rstrip() + (snippet.smoke_overrides or "")]
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True,
                          timeout=SNIPPET_TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.parametrize("snippet", [snippet for snippet in readme_snippets() if snippet.runs],
                         ids=lambda snippet: f"line{snippet.line}")
def test_snippet_runs_as_written(snippet: Snippet, workdir: Path):
    result = run_snippet(snippet, workdir)
    assert result.returncode == 0, f"README line {snippet.line}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
