"""The command line starts without torch, its offline name lists match the library, and
log lines never land inside a progress bar."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from uae_augment import PRESETS, _names, _progress, available_datasets

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import runpy, sys\n"
    "sys.argv = ['uae-augment', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('uae_augment.cli', run_name='__main__')\n"
    "except SystemExit as exit:\n"
    "    assert exit.code == 0, exit.code\n"
    "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
)


@pytest.mark.parametrize("argv", [["--help"], ["precompute", "--help"], ["inspect", "--help"], ["demo", "--help"]])
def test_help_does_not_import_torch(argv):
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: uae-augment" in done.stdout and done.stdout.rstrip().endswith("NO-TORCH")


def test_a_command_imports_torch_when_it_runs():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE.replace("exit.code == 0", "exit.code == 1"),
            "inspect",
            "absent.h5",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.stdout.rstrip().endswith("TORCH") and "absent.h5" in done.stderr


def test_the_offline_name_lists_match_the_library():
    assert _names.DATASET_NAMES == available_datasets()
    assert set(_names.PRESET_NAMES) == set(PRESETS)


def test_log_lines_through_tqdm_do_not_interleave_with_a_bar():
    stream = io.StringIO()
    handler = _progress.TqdmLoggingHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("tests.interleave")
    log.addHandler(handler)
    log.propagate = False
    try:
        with tqdm(total=4, file=stream, desc="bar", mininterval=0, ascii=True) as bar:
            bar.update(1)
            log.warning("halfway there")
            bar.update(3)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    # The bar is cleared before the message, which sits on a line of its own.
    before, _, after = text.partition("WARNING halfway there")
    assert after.startswith("\n")
    assert before.rsplit("\r", 1)[-1].strip() == "" and before.rstrip(" ").endswith("\r")
    # A plain StreamHandler would append the message to the bar's line.
    plain = io.StringIO()
    with tqdm(total=4, file=plain, desc="bar", mininterval=0, ascii=True) as bar:
        bar.update(1)
        plain.write("WARNING halfway there\n")
    assert "1/4" in plain.getvalue().partition("WARNING")[0].rsplit("\r", 1)[-1]


def test_the_cli_logs_through_tqdm(monkeypatch):
    from uae_augment import cli

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    cli._configure_logging(1)
    assert [type(h) for h in root.handlers] == [_progress.TqdmLoggingHandler]
