"""Output folders: a run never deletes what it did not write, finds an unusable --out before sampling, and leaves
nothing behind when it fails or is killed (hvae-generate, hvae-data prepare, and their shared atomic_directory)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from reliability_helpers import hidden_entries, run_cli

from hvae_pipeline.cli import data as data_cli
from hvae_pipeline.cli import generate
from hvae_pipeline.outputs.export import SampleFolderWriter
from hvae_pipeline.storage.output_folder import OutputFolderError, atomic_directory

REPO_ROOT = Path(__file__).resolve().parents[2]
OWNED = ("result.txt",)


def generate_args(model: Path, out: str | Path, *extra: str) -> list[str]:
    # Every pair is kept: the tiny model's masks are too small for the default (the paper's > 200 px).
    return ["--model", str(model), "--num-samples", "3", "--batch-size", "2", "--min-tumour-area", "0", "--out",
            str(out), *extra]


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A folder holding a user's file, next to nothing else."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    return folder


# ------------------------------------------------------------------------------------------------ refused up front
@pytest.mark.parametrize("out", [".", "..", "{cwd}"])
def test_generate_refuses_the_working_folder_and_its_parents(tiny_pipeline_folder, user_folder, monkeypatch, capsys,
                                                              out):
    monkeypatch.chdir(user_folder)
    out = out.format(cwd=user_folder)
    code, err = run_cli(generate.main, generate_args(tiny_pipeline_folder, out, "--overwrite"), capsys)
    assert code == 2
    assert f"--out {out}: is the working folder or one of its parents" in err and "pass a new folder" in err
    assert sorted(p.name for p in user_folder.iterdir()) == ["notes.txt"]
    assert (user_folder / "notes.txt").read_text() == "precious"
    assert hidden_entries(user_folder.parent) == []


@pytest.mark.parametrize("foreign", ["notes.txt", "images/my_scan.tif", "masks", "images/sample_00000.png/"])
def test_generate_overwrite_refuses_a_folder_with_foreign_files(tiny_pipeline_folder, tmp_path, capsys, foreign):
    out = tmp_path / "out"
    assert generate.main(generate_args(tiny_pipeline_folder, out)) == 0
    # A file where the tool writes a folder, or a folder where it writes a file, is not its output either.
    path = out / foreign.rstrip("/")
    if foreign.endswith("/"):
        path.unlink()
        path.mkdir()
        path = path / "inside.txt"
    elif foreign == "masks":
        (out / "masks").rename(tmp_path / "masks-aside")
    path.write_text("precious")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code, err = run_cli(generate.main, generate_args(tiny_pipeline_folder, out, "--overwrite"), capsys)
    assert code == 2 and f"holds files this tool did not write ({foreign})" in err
    assert "pass a new or empty folder" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before and path.read_text() == "precious"
    assert hidden_entries(tmp_path) == []


def test_generate_names_at_most_five_foreign_files(tiny_pipeline_folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for index in range(7):
        (out / f"scan_{index}.nii").write_text("precious")
    code, err = run_cli(generate.main, generate_args(tiny_pipeline_folder, out, "--overwrite"), capsys)
    assert code == 2 and "(scan_0.nii, scan_1.nii, scan_2.nii, scan_3.nii, scan_4.nii and 2 more)" in err
    assert len(list(out.iterdir())) == 7


def test_generate_refuses_its_previous_output_without_overwrite(tiny_pipeline_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert generate.main(generate_args(tiny_pipeline_folder, out, "--seed", "1")) == 0
    manifest = (out / "manifest.json").read_text()
    code, err = run_cli(generate.main, generate_args(tiny_pipeline_folder, out), capsys)
    assert code == 2 and f"--out {out}: is not empty; pass --overwrite" in err
    assert (out / "manifest.json").read_text() == manifest
    assert generate.main(generate_args(tiny_pipeline_folder, out, "--overwrite")) == 0
    assert (out / "manifest.json").read_text() != manifest and hidden_entries(tmp_path) == []


@pytest.mark.parametrize("kind", ["file", "link"])
def test_generate_refuses_an_out_that_is_not_a_folder(tiny_pipeline_folder, tmp_path, capsys, kind):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("precious")
    else:
        (tmp_path / "real").mkdir()
        out.symlink_to(tmp_path / "real")
    code, err = run_cli(generate.main, generate_args(tiny_pipeline_folder, out, "--overwrite"), capsys)
    assert code == 2 and f"--out {out}: exists and is not a folder" in err
    assert out.is_symlink() if kind == "link" else out.read_text() == "precious"


def test_generate_finds_an_unwritable_out_before_sampling(tiny_pipeline_folder, tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("sampled although --out cannot be written")

    monkeypatch.setattr(generate.HVAEPipeline, "sample_batches", never)
    blocker = tmp_path / "a-file"
    blocker.write_text("precious")
    code, err = run_cli(generate.main, generate_args(tiny_pipeline_folder, blocker / "deeper" / "out"), capsys)
    assert code == 2 and f"--out: cannot create the folder {blocker / 'deeper'}" in err
    assert "pass a folder in a writable location" in err and blocker.read_text() == "precious"
    code, err = run_cli(generate.main, generate_args(tiny_pipeline_folder, blocker / "out"), capsys)
    assert code == 2 and f"cannot write in {blocker} (Not a directory); pass a writable folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


# ------------------------------------------------------------------------------------------------ during the run
def test_generate_keeps_an_empty_out_and_a_file_put_there_during_the_run(tiny_pipeline_folder, tmp_path, monkeypatch,
                                                                         capsys):
    out = tmp_path / "out"
    out.mkdir()
    add = SampleFolderWriter.add

    def user_writes_meanwhile(*args, **kwargs):
        (out / "notes.txt").write_text("precious")
        add(*args, **kwargs)

    monkeypatch.setattr(SampleFolderWriter, "add", user_writes_meanwhile)
    code, err = run_cli(generate.main, generate_args(tiny_pipeline_folder, out), capsys)
    assert code == 2 and "holds files this tool did not write (notes.txt)" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "precious"
    assert hidden_entries(tmp_path) == []


def test_generate_overwrite_restores_the_previous_output_when_a_file_appeared(tiny_pipeline_folder, tmp_path,
                                                                             monkeypatch, capsys):
    out = tmp_path / "out"
    assert generate.main(generate_args(tiny_pipeline_folder, out)) == 0
    previous = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    add = SampleFolderWriter.add

    def user_writes_meanwhile(*args, **kwargs):
        (out / "notes.txt").write_text("precious")
        add(*args, **kwargs)

    monkeypatch.setattr(SampleFolderWriter, "add", user_writes_meanwhile)
    code, err = run_cli(generate.main, generate_args(tiny_pipeline_folder, out, "--overwrite", "--seed", "5"), capsys)
    assert code == 2 and "(notes.txt)" in err
    now = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert now == previous | {Path("notes.txt"): b"precious"}
    assert hidden_entries(tmp_path) == []


def test_generate_failure_removes_staging_and_the_folders_it_created(tiny_pipeline_folder, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "out"
    code, err = run_cli(generate.main, generate_args(tiny_pipeline_folder, out, "--min-tumour-area", "256"), capsys)
    assert code == 1 and "min_tumour_area=256" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_generate_killed_while_writing_leaves_nothing(tiny_pipeline_folder, tmp_path, stop):
    """A real process, stopped by a signal after its first batch is on disk (the scheduler's SIGTERM, a Ctrl-C)."""
    out = tmp_path / "out"
    script = textwrap.dedent("""
        import sys, time
        from hvae_pipeline.cli import generate

        from hvae_pipeline.outputs.export import SampleFolderWriter

        add = SampleFolderWriter.add

        def slow_add(*args, **kwargs):
            add(*args, **kwargs)
            print("WRITTEN", flush=True)
            time.sleep(120)

        SampleFolderWriter.add = slow_add
        sys.exit(generate.main(sys.argv[1:]))
    """)
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    # SIGINT at its default, as at a terminal: a shell starts background jobs (a test run with `&`) with it ignored,
    # and Python keeps an ignored SIGINT ignored.
    process = subprocess.Popen([sys.executable, "-c", script, *generate_args(tiny_pipeline_folder, out)],
                               cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while "WRITTEN" not in process.stdout.readline():
            assert process.poll() is None, process.stderr.read()
        staging = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
        assert len(staging) == 1 and any((staging[0] / "images").iterdir())  # partial output exists, hidden
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + stop
    assert list(tmp_path.iterdir()) == []
    if stop == signal.SIGINT:
        assert "hvae-generate: interrupted; nothing was written to --out" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ hvae-data prepare
def prepare_args(root: Path, out: str | Path, *extra: str) -> list[str]:
    return ["prepare", "pairs", str(root), "--image-glob", "{case}.png", "--mask-glob", "{case}_mask.png",
            "--size", "16", "--out", str(out), *extra]


@pytest.mark.parametrize("out", [".", ".."])
def test_prepare_refuses_the_working_folder_and_leaves_no_old_folder(user_folder, monkeypatch, capsys, out):
    monkeypatch.chdir(user_folder)
    code, err = run_cli(data_cli.main, prepare_args(user_folder / "missing", out, "--overwrite"), capsys)
    assert code == 2 and f"hvae-data: error: --out {out}: is the working folder or one of its parents" in err
    assert sorted(p.name for p in user_folder.iterdir()) == ["notes.txt"]
    assert hidden_entries(user_folder.parent) == []


def test_prepare_overwrite_refuses_foreign_files_before_loading(user_folder, monkeypatch, capsys):
    def never(args):
        raise AssertionError("loaded the data although --out was refused")

    monkeypatch.setattr(data_cli, "_load", never)
    code, err = run_cli(data_cli.main, prepare_args(user_folder / "missing", user_folder, "--overwrite"), capsys)
    assert code == 2 and "holds files this tool did not write (notes.txt)" in err
    assert sorted(p.name for p in user_folder.iterdir()) == ["notes.txt"]


def test_prepare_failure_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "new" / "prepared"
    code, err = run_cli(data_cli.main, prepare_args(tmp_path / "missing", out), capsys)
    assert code == 2 and "missing" in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ atomic_directory
def test_atomic_directory_cleans_up_on_an_exception_and_restores_signal_handlers(tmp_path):
    target = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(target, OWNED) as staging:
            (staging / "result.txt").write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_atomic_directory_turns_sigterm_into_a_clean_exit(tmp_path):
    with pytest.raises(SystemExit) as exited:
        with atomic_directory(tmp_path / "out", OWNED) as staging:
            (staging / "result.txt").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
    assert exited.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_atomic_directory_replaces_only_owned_output(tmp_path):
    target = tmp_path / "out"
    for content in ("first", "second"):
        with atomic_directory(target, OWNED, overwrite=True) as staging:
            (staging / "result.txt").write_text(content)
    assert [p.name for p in target.iterdir()] == ["result.txt"] and (target / "result.txt").read_text() == "second"
    (target / "other.txt").write_text("precious")
    with pytest.raises(OutputFolderError, match=r"holds files this tool did not write \(other.txt\)"):
        with atomic_directory(target, OWNED, overwrite=True):
            raise AssertionError("the block ran although the target was refused")
    assert sorted(p.name for p in target.iterdir()) == ["other.txt", "result.txt"]
    assert hidden_entries(tmp_path) == []
