"""The CLI skeleton: help, list, inspect, errors as one line, no heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import R152X2, tiny_registry

from convert.registry import load_registry
from convert.synthetic import synthetic_arrays


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_help_lists_every_command_and_exit_status(invoke):
    from convert.cli import cli
    from convert.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, BitconvertError

    result = invoke("--help")
    assert result.exit_code == 0
    assert {"list", "fetch", "inspect", "verify", "mapping", "export", "predict"} <= set(cli.commands)
    for command in cli.commands:
        assert f"\n  {command} " in result.output
    epilog = " ".join(result.output[result.output.index("Exit status") :].split())
    statuses = {c.exit_code for c in _subclasses(BitconvertError)} | {EXIT_INTERNAL, EXIT_INTERRUPTED}
    for status in statuses:
        assert f" {status} " in f" {epilog} ", status


def test_list_prints_every_registry_entry(invoke):
    result = invoke("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "ARCH", "CLASSES", "RES", "SOURCE"]
    reg = load_registry()
    assert len(lines) == 1 + len(reg.named()) == 27  # the 26 named models, not the 285 generated ones
    assert not any(line.startswith("vtab-") for line in lines)
    assert lines[4].split() == ["r50x1-160", "R50x1", "1000", "160", "distill/R50x1_160.npz"]
    assert result.stderr == ""


def test_list_json_is_the_registry(invoke):
    result = invoke("list", "--json")
    data = json.loads(result.stdout)
    assert [d["id"] for d in data] == load_registry().ids
    r152 = next(d for d in data if d["id"] == "r152x2-384")
    assert (r152["architecture"], r152["classes"], r152["resolution"], r152["source"]) == (
        "R152x2",
        1000,
        384,
        "distill/R152x2_T_384.npz",
    )
    assert (r152["code"], r152["root_pool_padding"]) == ("big_vision", "neg_inf")
    bit_s = next(d for d in data if d["id"] == "bit-s-r50x1")
    assert (bit_s["code"], bit_s["root_pool_padding"]) == ("big_transfer", "zero")


def test_list_all_and_family(invoke):
    reg = load_registry()
    everything = invoke("list", "--all").stdout.splitlines()
    assert len(everything) == 1 + len(reg.entries) == 1 + 26 + 285
    vtab = invoke("list", "--family", "vtab").stdout.splitlines()[1:]
    assert len(vtab) == 285 and all(line.startswith("vtab-") for line in vtab)
    assert vtab[0].split() == ["vtab-r50x1-run0-caltech101", "R50x1", "102", "480", "vtab/BiT-M-R50x1-run0-caltech101.npz"]
    ilsvrc = json.loads(invoke("list", "--json", "--family", "bit-m-ilsvrc2012").stdout)
    assert len(ilsvrc) == 6 and all(d["resolution"] == 480 and d["resolution_note"] for d in ilsvrc)
    bad = invoke("list", "--family", "vtab1k")
    assert bad.exit_code == 2 and "unknown family 'vtab1k'; known: bit-m, bit-m-ilsvrc2012, bit-s, distill, vtab" in bad.stderr


def test_list_collection_only(invoke):
    data = json.loads(invoke("list", "--json", "--collection").stdout)
    assert sorted(d["id"] for d in data) == ["r152x2-224", "r152x2-384", "r50x1-160", "r50x1-224"]


def test_inspect_r50x1(invoke, r50x1_npz):
    result = invoke("inspect", r50x1_npz, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["depth"], data["width"], data["classes"]) == (50, 1, 1000)
    assert (data["arrays"], data["parameters"], data["ok"]) == (153, 25549352, True)
    text = invoke("inspect", r50x1_npz).stdout
    assert "R50x1 (depth 50, width 1, units 3,4,6,3)" in text and "25,549,352" in text


@pytest.mark.parametrize(
    "name, code, padding, decided_by",
    [
        ("distill/R50x1_160.npz", "big_vision", "neg_inf", "file name"),  # as the cache keeps it
        ("R50x1_224.npz", "big_vision", "neg_inf", "file name"),
        ("BiT-S-R50x1.npz", "big_transfer", "zero", "file name"),
    ],
)
def test_inspect_says_which_code_a_file_follows(invoke, r50x1_npz, tmp_path, name, code, padding, decided_by):
    link = tmp_path / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(r50x1_npz)
    data = json.loads(invoke("inspect", link, "--json").stdout)
    assert (data["forward"]["code"], data["forward"]["root_pool_padding"], data["forward"]["decided_by"]) == (
        code,
        padding,
        decided_by,
    )
    text = invoke("inspect", link).stdout
    assert f"forward pass: {code} (root max-pool padded with {'-inf' if code == 'big_vision' else 'zeros'}" in text


def test_inspect_of_an_ambiguous_name_asks_for_the_model(invoke, r50x1_npz):
    # R50x1 with 1000 classes is a distill/ student (big_vision) or a BiT-S/BiT-M file (big_transfer).
    data = json.loads(invoke("inspect", r50x1_npz, "--json").stdout)
    assert data["forward"]["code"] is None and "r50x1-160" in data["forward"]["models"]
    assert "pass --model ID" in invoke("inspect", r50x1_npz).stdout
    forced = json.loads(invoke("inspect", r50x1_npz, "--json", "--model", "r50x1-160").stdout)["forward"]
    assert (forced["code"], forced["decided_by"]) == ("big_vision", "--model")


@pytest.mark.slow
def test_inspect_r152x2(invoke, r152x2_npz):
    data = json.loads(invoke("inspect", r152x2_npz, "--json").stdout)
    assert (data["depth"], data["width"], data["classes"], data["arrays"]) == (152, 2, 1000, 459)
    assert data["parameters"] == load_registry().get("r152x2-384").params


def test_inspect_against_a_registry_entry(invoke, r50x1_npz):
    assert invoke("inspect", r50x1_npz, "--model", "r50x1-160").exit_code == 0
    result = invoke("inspect", r50x1_npz, "--model", "bit-m-r50x1")
    assert result.exit_code == 1
    assert "wrong shape resnet/head/conv2d/bias: got (1000,), expected (21843,)" in result.stdout  # every problem listed
    # The error line says what the file is instead (issue 12, item 6).
    assert "valid R50x1 checkpoint with a 1000-class head (it fits r50x1-224, r50x1-160, bit-s-r50x1" in result.stderr


def test_inspect_reports_every_problem_and_exits_1(invoke, tmp_path):
    arrays = synthetic_arrays(R152X2.__class__.from_depth(50, 1, 1000), seed=0)
    del arrays["resnet/block4/unit03/c/group_norm/gamma"]
    arrays["resnet/extra"] = np.zeros(2, np.float32)
    arrays["resnet/group_norm/beta"] = arrays["resnet/group_norm/beta"].astype(np.float64)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    result = invoke("inspect", path)
    assert result.exit_code == 1
    assert "  - missing resnet/block4/unit03/c/group_norm/gamma (expected float32 (512,))" in result.stdout
    assert "  + unexpected resnet/extra float32 (2,)" in result.stdout
    assert "  ~ wrong dtype resnet/group_norm/beta: got float64, expected float32" in result.stdout
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bitconvert: error: ") and "3 problems" in err[0]
    data = json.loads(invoke("inspect", path, "--json").stdout)
    assert data["ok"] is False and len(data["problems"]) == 3


def test_unknown_model_is_a_usage_error_with_a_suggestion(invoke, r50x1_npz):
    result = invoke("inspect", r50x1_npz, "--model", "r50x1_160")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("bitconvert: error: unknown model id 'r50x1_160'; did you mean r50x1-160")


def test_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    proc = subprocess.run([sys.executable, "-m", "convert", "inspect", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "not a readable .npz (zip) file" in proc.stderr
    debug = subprocess.run([sys.executable, "-m", "convert", "--debug", "inspect", str(bad)], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_list_imports_neither_tensorflow_nor_jax():
    code = (
        "import sys; from convert.cli import main\n"
        "try:\n    main(['list', '--json'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('tensorflow', 'jax', 'flax') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in proc.stderr, proc.stderr


def test_console_script_is_installed():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "bitconvert"]
    assert ep.value == "convert.cli:main"


class _Left(Exception):
    """Raised by the patched os._exit."""


@pytest.mark.parametrize("heavy", [True, False], ids=["after-tensorflow", "light-command"])
def test_main_exit_status_and_output(heavy, monkeypatch, capsys):
    """After TF or JAX, main() leaves with os._exit (flushed, same status); light commands exit normally."""
    import convert.cli.commands as cli_mod

    def fake_exit(status):
        raise _Left(status)

    monkeypatch.setattr(cli_mod.os, "_exit", fake_exit)
    slow = ("json",) if heavy else ("no-such-module",)
    for argv, status in ((["list", "--collection"], 0), (["verify", "--model", "r50x1-1600"], 2)):
        with pytest.raises(_Left if heavy else SystemExit) as caught:
            cli_mod.main(argv, slow_to_unload=slow)
        assert (caught.value.args[0] if heavy else caught.value.code) == status
    out, err = capsys.readouterr()
    assert "r152x2-384" in out and "did you mean r50x1-160" in err


def test_exit_status_of_a_message():
    from convert.cli.commands import exit_status

    assert (exit_status(None), exit_status(0), exit_status(6), exit_status("bye")) == (0, 0, 6, 1)


def test_export_forward_option_chooses_the_root_pool_padding(invoke, exported, tiny_npz, tmp_path, monkeypatch):
    """`export` computes the authors' forward pass by default (r50x1-160: big_vision, -inf); --forward zero-pool
    gives the 2022 collection's zeros, and the manifest and card say which (on the tiny layout, as a big_vision
    entry of a registry of its own: the same option at a fraction of R50x1's cost)."""
    path, _ = exported
    default = json.loads((path / "manifest.json").read_text())["forward"]
    assert (default["choice"], default["root_pool_padding"]) == ("authors", "neg_inf")
    monkeypatch.setenv("BITCONVERT_REGISTRY", str(tiny_registry(tmp_path / "r.yaml", "tiny-bit", "t.npz", "big_vision")))
    res = invoke(
        "export", "--model", "tiny-bit", "--checkpoint", tiny_npz, "-o", tmp_path, "--skip-parity", "--forward", "zero-pool"
    )
    assert res.exit_code == 0, res.stderr
    forward = json.loads((tmp_path / "tiny-bit" / "manifest.json").read_text())["forward"]
    assert (forward["choice"], forward["root_pool_padding"]) == ("zero-pool", "zero")
    assert "--forward zero-pool" in (tmp_path / "tiny-bit" / "classification.md").read_text()


@pytest.mark.parametrize("text, size", [("224", 224), ("101x134", (101, 134)), ("64X72", (64, 72)), ("32", 32)])
def test_parity_resolution_takes_a_side_or_height_by_width(text, size):
    from convert.cli.options import ImageSize

    assert ImageSize().convert(text, None, None) == size


@pytest.mark.parametrize("option", ["export --parity-resolution", "verify --resolution"])
@pytest.mark.parametrize("text", ["31", "12x300", "64x", "x64", "64x72x3", "axb", "-64", ""])
def test_a_bad_image_size_is_one_usage_line(invoke, option, text, tmp_path):
    command, name = option.split()
    result = invoke(command, "--model", "r50x1-160", "--checkpoint", tmp_path / "none.npz", name, text)
    assert result.exit_code == 2
    assert f"Invalid value for '{name}': {text!r} is not PX or HxW" in result.stderr
