"""Packaging: a wheel and an editable install put only ``hvae_pipeline`` at the top level of site-packages (the
checkout's ``training/`` and ``demo/`` become ``hvae_pipeline.training`` and ``hvae_pipeline.demo``), the console
scripts run outside the checkout, and every command answers ``--version`` from the one version string.

Nothing is downloaded: the wheel is built with this environment's setuptools (``--no-build-isolation``) and installed
with ``--no-deps --no-index`` into a throw-away virtual environment that sees this one's dependencies."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import hvae_pipeline

REPOSITORY = Path(__file__).resolve().parents[1]
# The checkout's folders that become packages, and the package name each is installed under.
INSTALLED_AS = {"hvae_pipeline": "hvae_pipeline", "training": "hvae_pipeline.training", "demo": "hvae_pipeline.demo"}
CONSOLE_SCRIPTS = {
    "hvae-generate": "hvae_pipeline.cli.generate:main",
    "hvae-data": "hvae_pipeline.cli.data:main",
    "hvae-evaluate": "hvae_pipeline.cli.evaluate:main",
    "hvae-demo": "hvae_pipeline.demo.app:main",
    "hvae-train": "hvae_pipeline.training.train_hvae:main",
    "hvae-train-lsgan": "hvae_pipeline.training.train_lsgan:main",
    "hvae-fit-prior": "hvae_pipeline.training.fit_latent_prior:main",
}
VERSION_LINE = f"hvae-pipeline {hvae_pipeline.__version__}"


def _copy_sources(destination: Path) -> Path:
    """The files a build reads, copied away from the checkout (a build writes build/ and *.egg-info beside them)."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPOSITORY / name, destination / name)
    for folder in INSTALLED_AS:
        shutil.copytree(REPOSITORY / folder, destination / folder, ignore=skip)
    return destination


def _pip(python: Path | str, *arguments: str, cwd: Path) -> None:
    command = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input", *arguments]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def _virtual_environment(folder: Path) -> Path:
    """A bare virtual environment whose interpreter also sees this environment's packages (pip, setuptools, torch...)
    through a ``.pth`` file naming its site-packages folders; returns its python. A ``.pth`` line adds a folder to
    ``sys.path`` without running the ``.pth`` files inside it, so this environment's own (editable) hvae-pipeline
    stays invisible there, and the checkout itself is not on that path."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    site_packages = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip()
    outer = [entry for entry in sys.path if Path(entry).name in ("site-packages", "dist-packages")]
    (Path(site_packages) / "_outer_environment.pth").write_text("".join(f"{entry}\n" for entry in outer))
    return python


def _run_outside_checkout(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


# Prints where each installed name comes from, and whether the checkout's folder names are importable on their own.
PROBE = """
import importlib.util, json
import hvae_pipeline.training.config, hvae_pipeline.demo
print(json.dumps({
    "hvae_pipeline": hvae_pipeline.__file__,
    "hvae_pipeline.training": hvae_pipeline.training.__file__,
    "hvae_pipeline.demo": hvae_pipeline.demo.__file__,
    "configs": str(hvae_pipeline.training.config.CONFIG_DIR),
    "top_level_training": importlib.util.find_spec("training") is not None,
    "top_level_demo": importlib.util.find_spec("demo") is not None,
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout, without network."""
    work = tmp_path_factory.mktemp("wheel")
    sources = _copy_sources(work / "src")
    _pip(sys.executable, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(work / "dist"),
         str(sources), cwd=work)
    (built,) = (work / "dist").glob("*.whl")
    return built


def test_wheel_holds_only_the_hvae_pipeline_namespace(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.name.startswith(f"hvae_pipeline-{hvae_pipeline.__version__}-")  # the version's single source
    assert {name.split("/")[0] for name in names} == {
        "hvae_pipeline", f"hvae_pipeline-{hvae_pipeline.__version__}.dist-info"}
    top_level = zipfile.ZipFile(wheel).read(f"hvae_pipeline-{hvae_pipeline.__version__}.dist-info/top_level.txt")
    assert top_level.decode().split() == ["hvae_pipeline"]


def test_wheel_carries_every_package_and_the_training_configs(wheel: Path):
    """pyproject lists the packages by hand (a package-dir mapping rules out `find`): none may be forgotten."""
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in INSTALLED_AS.items():
        for init in (REPOSITORY / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPOSITORY / folder)
            installed = "/".join([*package.split("."), *relative.parts, "__init__.py"])
            assert installed in names, f"{init.relative_to(REPOSITORY)} is missing from pyproject's packages"
    configs = sorted(path.name for path in (REPOSITORY / "training" / "configs").glob("*.yaml"))
    assert configs and all(f"hvae_pipeline/training/configs/{name}" in names for name in configs)
    data_files = sorted(path.relative_to(REPOSITORY).as_posix() for path in (REPOSITORY / "hvae_pipeline").rglob("*")
                        if path.is_file() and path.suffix not in (".py", ".pyc"))
    assert {"hvae_pipeline/checkpoints/default/model_index.json", "hvae_pipeline/hub/model_card_template.md"} <= set(
        data_files)
    missing = [name for name in data_files if name not in names]  # weights, priors, cards, templates, split files
    assert not missing, f"{missing}: declare their folders in pyproject's packages and package-data"
    assert "hvae_pipeline/checkpoints/default/pipeline.py" in names


def test_build_prints_no_package_data_warning(tmp_path: Path):
    """Data folders (checkpoints, configs) are declared, so setuptools does not warn that it would ignore them."""
    sources = _copy_sources(tmp_path / "src")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "--verbose", "--wheel-dir", str(tmp_path / "dist"), str(sources)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "would be ignored" not in result.stdout + result.stderr


def test_wheel_declares_the_console_scripts(wheel: Path):
    entry_points = zipfile.ZipFile(wheel).read(f"hvae_pipeline-{hvae_pipeline.__version__}.dist-info/entry_points.txt")
    declared = dict(re.findall(r"^(\S+) = (\S+)$", entry_points.decode(), flags=re.M))
    assert declared == CONSOLE_SCRIPTS


def test_installed_wheel_runs_outside_the_checkout(wheel: Path, tmp_path: Path):
    python = _virtual_environment(tmp_path / "venv")
    _pip(python, "install", "--no-deps", "--no-index", str(wheel), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = _run_outside_checkout([str(python), "-c", PROBE], cwd=elsewhere).stdout
    site_packages = str(tmp_path / "venv")
    assert '"top_level_training": false' in probe and '"top_level_demo": false' in probe
    for key in ("hvae_pipeline", "hvae_pipeline.training", "hvae_pipeline.demo", "configs"):
        assert re.search(rf'"{re.escape(key)}": "{re.escape(site_packages)}/', probe), probe
    result = _run_outside_checkout([str(tmp_path / "venv" / "bin" / "hvae-train"), "--version"], cwd=elsewhere)
    assert result.stdout.strip() == VERSION_LINE


def test_editable_install_maps_training_and_demo_into_the_namespace(tmp_path: Path):
    """How scripts/setup.sh and CI install: the installed names resolve to the checkout's own folders."""
    sources = _copy_sources(tmp_path / "src")
    python = _virtual_environment(tmp_path / "venv")
    _pip(python, "install", "--no-deps", "--no-build-isolation", "--no-index", "--editable", str(sources), cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = _run_outside_checkout([str(python), "-c", PROBE], cwd=elsewhere).stdout
    assert '"top_level_training": false' in probe and '"top_level_demo": false' in probe
    assert f'"hvae_pipeline.training": "{sources}/training/__init__.py"' in probe
    assert f'"hvae_pipeline.demo": "{sources}/demo/__init__.py"' in probe
    assert f'"configs": "{sources}/training/configs"' in probe


@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_every_command_prints_the_package_version(script: str, capsys: pytest.CaptureFixture):
    """Each console script's target (the wheel declares exactly these) answers ``--version`` from the one string."""
    module, function = CONSOLE_SCRIPTS[script].split(":")
    with pytest.raises(SystemExit) as exit_:
        getattr(importlib.import_module(module), function)(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == VERSION_LINE


def test_the_checkout_imports_training_and_demo_under_one_name():
    """`from training import ...` beside `from hvae_pipeline.training import ...` would load each module twice, with
    two copies of its classes and state: code, tests and scripts use the installed names only."""
    stray = re.compile(r"^\s*(?:from|import)\s+(?:training|demo)\b|-m\s+demo\.|[\"']-m[\"'],\s*[\"']demo\.", re.M)
    offenders = []
    for folder in ("hvae_pipeline", "training", "demo", "tests", "scripts", "benchmarks"):
        for path in (REPOSITORY / folder).rglob("*.py"):
            offenders += [f"{path.relative_to(REPOSITORY)}: {match.group(0).strip()}"
                          for match in stray.finditer(path.read_text())]
    assert not offenders


def test_dev_extra_installs_what_the_demo_screenshot_needs():
    """`python -m hvae_pipeline.demo.browser` needs Gradio (the demo extra) and Playwright; chromium comes from the
    system (scripts/install_browser.sh)."""
    requirements = importlib.metadata.requires("hvae-pipeline")
    dev = [requirement for requirement in requirements if requirement.endswith('extra == "dev"')]
    assert any(requirement.startswith("playwright") for requirement in dev)
    assert any(requirement.startswith("hvae-pipeline[") and "demo" in requirement for requirement in dev)
    demo = [requirement for requirement in requirements if requirement.endswith('extra == "demo"')]
    assert any(requirement.startswith("gradio") for requirement in demo)
    assert importlib.util.find_spec("playwright") is not None  # this environment was set up with the dev extra
