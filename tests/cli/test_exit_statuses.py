"""The exit-status contract: the README's table, convert.errors and every --help say the same, and the CLI keeps it.

Bad local files (missing, a directory, a FIFO, /dev/zero, not a checkpoint or image) are one line and
status 1 in every command that reads them; writing the output to a full disk is status 6.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from convert import errors
from convert.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"
MODEL = "r50x1-160"


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def documented_statuses() -> set[int]:
    """What convert.errors defines: every ``EXIT_*`` constant, and 0."""
    return {0} | {value for name, value in vars(errors).items() if name.startswith("EXIT_")}


def readme_table() -> dict[int, str]:
    """``status -> meaning`` from the README's table whose header is ``| status | meaning |``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("| status | meaning |")
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        status, meaning = (cell.strip() for cell in line.strip("|").split("|", 1))
        rows[int(status)] = meaning
    return rows


def epilog_statuses(text: str) -> set[int]:
    """The statuses named in ``Exit status: 0 ok; 1 bad input (...); 2 usage; ...``."""
    epilog = " ".join(text[text.index("Exit status:") :].split())
    return {int(n) for n in re.findall(r"(?:: |; )(\d+) ", epilog)}


def test_the_readme_table_lists_exactly_the_statuses_of_convert_errors():
    table = readme_table()
    assert set(table) == documented_statuses()
    assert all(table.values())
    for cls in _subclasses(errors.BitconvertError):
        assert cls.exit_code in table, cls


def test_the_help_epilog_lists_the_same_statuses(invoke):
    result = invoke("--help")
    assert result.exit_code == 0
    assert epilog_statuses(result.output) == documented_statuses()


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_each_help_names_only_documented_statuses(invoke, command):
    text = " ".join(invoke(command, "--help").output.split())
    named = {int(n) for n in re.findall(r"[Ee]xits? (?:status )?(\d+)", text)}
    assert named <= documented_statuses(), (command, named)


@pytest.mark.parametrize("command", ["verify", "mapping"])
def test_single_model_commands_do_not_call_model_repeatable(invoke, command):
    text = " ".join(invoke(command, "--help").output.split())
    assert "repeatable" not in text and "exactly one" in text
    result = invoke(command, "--model", MODEL, "--model", "r50x1-224")
    assert result.exit_code == 2 and "exactly one" in result.stderr


def test_predict_help_names_every_decoded_format(invoke):
    text = invoke("predict", "--help").output
    for name in ("JPEG", "PNG", "WebP", "GIF", "BMP"):
        assert name in text


# -- bad local files: one line, status 1, everywhere ------------------------------------------


@pytest.fixture
def bad_files(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    (tmp_path / "dir.npz").mkdir()
    (tmp_path / "text.npz").write_text("not a zip\n")
    return {
        "missing": (tmp_path / "missing.npz", "no such file"),
        "directory": (tmp_path / "dir.npz", "is a directory, not a regular file"),
        "fifo": (fifo, "is a FIFO (named pipe), not a regular file"),
        "device": (Path("/dev/zero"), "is a character device, not a regular file"),
        "not a zip": (tmp_path / "text.npz", "not a readable .npz"),
    }


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A fresh process: a FIFO or /dev/zero read by mistake must fail the test by timing out, not hang the suite."""
    env = {**os.environ, "BITCONVERT_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "convert", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


CHECKPOINT_READERS = {
    "inspect": lambda path, out: ["inspect", str(path)],
    "verify": lambda path, out: ["verify", "--model", MODEL, "--checkpoint", str(path), "--quiet"],
    "export": lambda path, out: ["export", "--model", MODEL, "--checkpoint", str(path), "-o", str(out), "--quiet"],
}


@pytest.mark.parametrize("command", sorted(CHECKPOINT_READERS))
def test_only_regular_files_are_read_as_checkpoints(bad_files, tmp_path, command):
    for what, (path, message) in bad_files.items():
        if command != "inspect" and what == "not a zip":
            continue  # the same reader as inspect, after the label file and the frameworks: covered there
        result = _run(*CHECKPOINT_READERS[command](path, tmp_path / "out"))
        assert result.returncode == 1, (command, what, result.stderr)
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1, (command, what, result.stderr)
        assert result.stderr.startswith("bitconvert: error: ") and message in result.stderr, (command, what, result.stderr)
    assert not (tmp_path / "out").exists()


def test_writing_the_output_to_a_full_disk_is_a_local_io_failure():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "convert", "list"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60
        )
    assert proc.returncode == errors.EXIT_IO
    assert proc.stderr == "bitconvert: error: cannot write the output: No space left on device\n"
