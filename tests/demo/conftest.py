"""Fixtures of the demo tests: tiny pipelines (16x16, instant) and one demo server started by its real command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from hvae_pipeline.models import HVAEModel
from hvae_pipeline.pipeline import HVAEPipeline

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 180  # importing torch and gradio on two busy cores can take a while


@pytest.fixture
def tiny_pipeline(tiny_config: dict) -> HVAEPipeline:
    """An in-memory (untrained) pipeline of the project's tiny configuration."""
    pipeline = HVAEPipeline(HVAEModel(**tiny_config).eval())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def saved_pipeline_dir(tiny_pipeline: HVAEPipeline, tmp_path: Path) -> Path:
    """The tiny pipeline saved with ``save_pretrained`` (no model card)."""
    folder = tmp_path / "pipeline"
    tiny_pipeline.save_pretrained(folder)
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def _servers() -> Iterator[tuple[dict[str, str], list[subprocess.Popen]]]:
    """Demo servers by model configuration (URLs, processes), started once per session and stopped at its end."""
    processes: list[subprocess.Popen] = []
    urls: dict[str, str] = {}
    yield urls, processes
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def demo_url(_servers, tiny_config: dict, tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of ``python -m hvae_pipeline.demo.app --model <tiny pipeline> --port <free port>`` running on 127.0.0.1.

    The server runs the documented command in a subprocess, shared by the tests of the session.
    """
    urls, processes = _servers
    key = json.dumps(tiny_config, sort_keys=True)
    if key in urls:
        return urls[key]
    folder = tmp_path_factory.mktemp("served") / "pipeline"
    HVAEPipeline(HVAEModel(**tiny_config)).save_pretrained(folder)
    port = _free_port()
    log_path = folder.parent / "server.log"
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log_path, "wb") as log:  # the server writes to its own copy of the file descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "hvae_pipeline.demo.app", "--model", str(folder), "--port", str(port)],
            cwd=REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    processes.append(process)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the demo exited with status {process.returncode}: {log_path.read_text()}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                urls[key] = url
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the demo did not answer on {url} within {SERVER_START_TIMEOUT_S} s")
