"""The ``uae-augment`` command line: help, precompute (single process and torchrun), inspect,
checkpoint checks and the lazily loaded demo subcommand.

Commands run in-process through ``main(argv)`` where that is enough, and as real
processes for the console script and torchrun. Expected rows come from the
Python API (the same model, checkpoint and attack built by hand).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from uae_augment import MINEUAE, AttackResult, Reconstruction, load_dataset
from uae_augment.cli import build_parser, main, parse_assignment
from uae_augment.data.cache import UAECache
from uae_augment.models import build_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(1)
    autoencoder = build_model("conv-ae", (1, 8, 8))
    classifier = build_model("mlp", (1, 8, 8), classes=10)
    paths = {name: folder / f"{name}.pt" for name in ("ae", "mlp", "module", "list")}
    torch.save(autoencoder.state_dict(), paths["ae"])
    torch.save(classifier.state_dict(), paths["mlp"])
    torch.save(autoencoder, paths["module"])  # a pickled nn.Module, not a state dict
    torch.save([torch.zeros(2)], paths["list"])
    return paths


def precompute_args(out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [
        "precompute",
        "digits",
        "--model",
        "conv-ae",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def digits_rows(limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("digits")
    return data.data[:limit], data.targets[:limit]


def test_parse_assignment_values():
    assert parse_assignment("steps=5") == ("steps", 5)
    assert parse_assignment("sigma=1e-3") == ("sigma", 1e-3)
    assert parse_assignment("statistics_hidden=null") == ("statistics_hidden", None)
    assert parse_assignment("statistics-hidden=None") == ("statistics_hidden", None)
    assert parse_assignment("record_history=true") == ("record_history", True)
    assert parse_assignment("delta_update=sign") == ("delta_update", "sign")
    with pytest.raises(argparse.ArgumentTypeError, match="key=value"):
        parse_assignment("steps")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["precompute", "inspect", "demo", "--verbose"]),
        (
            ["precompute"],
            [
                "--checkpoint",
                "--attack",
                "--preset",
                "--set",
                "--seed",
                "--no-resume",
                "--limit",
                "--num-workers",
                "--dtype",
                "--compression",
                "--data-root",
            ],
        ),
        (["inspect"], ["--json", "--bins"]),
    ],
)
def test_help(capsys, argv, expected):
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in expected:
        assert option in text


def test_demo_help_shows_the_demo_options(capsys):
    demo = pytest.importorskip("uae_augment.demo")
    own = argparse.ArgumentParser()
    demo.add_arguments(own)
    options = [o for action in own._actions for o in action.option_strings if o not in ("-h", "--help")]
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert options and all(option in text for option in options)


def test_cli_works_without_the_demo_module(monkeypatch, capsys, tmp_path, checkpoints):
    monkeypatch.setitem(sys.modules, "uae_augment.demo", None)  # importing it now fails
    assert main(["demo"]) == 1
    assert "demo is not available" in capsys.readouterr().err
    out = tmp_path / "g.h5"
    assert main(precompute_args(out, checkpoints["ae"], "--attack", "gaussian", "--limit", "20")) == 0
    assert main(["inspect", str(out)]) == 0


def test_console_script_help():
    script = Path(sys.executable).with_name("uae-augment")
    done = subprocess.run([str(script), "precompute", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--checkpoint" in done.stdout


def test_precompute_equals_the_python_api(tmp_path, checkpoints, capsys):
    out = tmp_path / "mine.h5"
    argv = precompute_args(
        out,
        checkpoints["ae"],
        "--attack",
        "mine-uae",
        "--preset",
        "fast",
        "--set",
        "steps=2",
        "--set",
        "mine_steps=1",
        "--seed",
        "3",
        "--limit",
        "16",
        "--batch-size",
        "6",
    )
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"finished {out}" in printed and "16 / 16 rows done" in printed

    model = build_model("conv-ae", (1, 8, 8))
    model.load_state_dict(torch.load(checkpoints["ae"], weights_only=True))
    attack = MINEUAE(Reconstruction(model.eval()), preset="fast", steps=2, mine_steps=1, seed=3)
    x, y = digits_rows(16)
    # The same batches as the command (rows [6k, 6k + 6)): kernels may round differently
    # for other batch sizes (about 1e-8 on MI), and the command promises bitwise equality.
    expected = AttackResult.cat([attack(x[i : i + 6], index=torch.arange(i, min(i + 6, 16))) for i in range(0, 16, 6)])
    cache = UAECache(out)
    adversarial, labels = cache.rows(range(16))
    torch.testing.assert_close(adversarial, expected.adversarial, rtol=0, atol=0)
    np.testing.assert_array_equal(cache.mi.numpy(), expected.mi.numpy())
    assert torch.equal(labels, y)
    assert cache.provenance["attack"] == json.loads(json.dumps(attack.config()))


def test_gaussian_overrides_resume_and_stale_provenance(tmp_path, checkpoints, capsys):
    out = tmp_path / "g.h5"
    argv = precompute_args(
        out,
        checkpoints["ae"],
        "--attack",
        "gaussian",
        "--set",
        "sigma=0.05",
        "--limit",
        "100",
        "--dtype",
        "float16",
        "--compression",
        "gzip",
    )
    assert main(argv) == 0
    cache = UAECache(out)
    assert cache.provenance["attack"]["sigma"] == 0.05 and cache.dtype == "float16"
    assert cache.compression == "gzip" and len(cache) == 100
    before = out.stat().st_mtime_ns
    assert main(argv) == 0  # a finished file is reused as is
    assert out.stat().st_mtime_ns == before
    capsys.readouterr()
    assert main([*argv, "--seed", "1"]) == 1
    error = capsys.readouterr().err
    assert "seed (file: 0, now: 1)" in error and "--no-resume" in error
    assert main([*argv, "--seed", "1", "--no-resume"]) == 0
    assert UAECache(out).provenance["seed"] == 1


def test_minmax_on_a_classifier(tmp_path, checkpoints, capsys):
    out = tmp_path / "minmax.h5"
    argv = [
        "precompute",
        "digits",
        "--model",
        "mlp",
        "--checkpoint",
        str(checkpoints["mlp"]),
        "--attack",
        "minmax",
        "--preset",
        "fast",
        "--set",
        "steps=3",
        "--limit",
        "12",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    cache = UAECache(out)
    assert cache.provenance["attack"]["mode"] == "supervised"
    assert cache.provenance["requires_labels"] is True
    assert torch.equal(cache.labels, digits_rows(12)[1])
    capsys.readouterr()
    wrong = [a if a != "minmax" else "mine-uae" for a in argv]
    assert main(wrong) == 1
    assert "needs an autoencoder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ("module", "not a weights-only state dict"),
        ("list", "holds a list, not a state dict"),
        ("mlp", "does not match --model conv-ae"),
        ("absent", "does not exist"),
    ],
)
def test_checkpoint_that_is_not_a_matching_state_dict_is_refused(tmp_path, checkpoints, capsys, checkpoint, message):
    path = checkpoints.get(checkpoint, tmp_path / "absent.pt")
    assert main(precompute_args(tmp_path / "x.h5", path, "--limit", "4")) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_bad_options_give_clear_errors(tmp_path, checkpoints, capsys):
    assert main(precompute_args(tmp_path / "x.h5", checkpoints["ae"], "--set", "stepz=3")) == 1
    error = capsys.readouterr().err
    assert "stepz" in error and "accepts:" in error and "mine_steps" in error
    assert main(["precompute", "digits", "--model", "nope", "--out", str(tmp_path / "x.h5")]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(precompute_args(tmp_path / "x.h5", checkpoints["ae"], "--limit", "5000")) == 1
    assert "--limit 5000 exceeds" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(precompute_args(tmp_path / "x.h5", checkpoints["ae"], "--device", "cuda")) == 1
        assert "CUDA is not available" in capsys.readouterr().err


def test_inspect_text_json_partial_and_damaged(tmp_path, checkpoints, capsys):
    out = tmp_path / "i.h5"
    assert main(precompute_args(out, checkpoints["ae"], "--attack", "gaussian", "--limit", "50")) == 0
    capsys.readouterr()
    assert main(["inspect", str(out), "-v"]) == 0
    text = capsys.readouterr().out
    cache = UAECache(out)
    for expected in (
        "50 / 50 rows done",
        f"ASR         {cache.asr:.4g}",
        "GaussianNoise",
        "MI ",
        "criterion",
    ):
        assert expected in text
    digests = cache.provenance["dataset"]["sha256"]
    assert (
        "dataset     digits/train (a subset), 50 rows of shape (1, 8, 8), sha256 of all 50 rows:"
        f" label {digests['label'][:12]}, sample {digests['sample'][:12]}\n"
    ) in text
    checkpoint = checkpoints["ae"].resolve()
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert f"model       conv-ae from {checkpoint} (sha256 {digest[:16]}), state hash " in text
    assert cache.provenance["model_origin"] == {
        "model": "conv-ae",
        "checkpoint": str(checkpoint),
        "sha256": digest,
    }
    assert main(["inspect", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["done"] == 50 and report["summary"]["asr"] == pytest.approx(cache.asr)
    assert report["provenance"] == cache.provenance

    with h5py.File(out, "r+") as handle:  # pretend the last 20 rows were never written
        handle["done"][30:] = False
    assert main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["done"] == 30

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all" * 100)
    assert main(["inspect", str(garbage)]) == 1
    assert str(garbage) in capsys.readouterr().err


def test_torchrun_equals_the_single_process_run(tmp_path, checkpoints):
    single, sharded = tmp_path / "single.h5", tmp_path / "sharded.h5"
    extra = ("--attack", "gaussian", "--limit", "200", "--batch-size", "32")
    assert main(precompute_args(single, checkpoints["ae"], *extra)) == 0
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "uae_augment.cli",
            "-v",
            *precompute_args(sharded, checkpoints["ae"], *extra),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "initialised a gloo process group: rank 1 of 2" in done.stderr
    assert done.stdout.count(f"finished {sharded}") == 1  # only rank 0 prints
    with h5py.File(single, "r") as a, h5py.File(sharded, "r") as b:
        for name in a:
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
    assert not list(tmp_path.glob("sharded.h5.*"))


def test_build_parser_does_not_import_the_demo_for_other_commands(monkeypatch):
    monkeypatch.delitem(sys.modules, "uae_augment.demo", raising=False)
    build_parser(["inspect", "x.h5"])
    assert "uae_augment.demo" not in sys.modules


def test_simclr_models_get_the_contrastive_criterion(capsys):
    from uae_augment.cli import CLIError, build_attack
    from uae_augment.contrastive import Contrastive
    from uae_augment.models import build_model

    model = build_model("simclr-resnet18", (3, 32, 32), width=4)
    sample = torch.rand(1, 3, 32, 32)
    args = build_parser(["precompute", "cifar10", "--model", "simclr-resnet18", "--out", "x.h5"]).parse_args(
        ["precompute", "cifar10", "--model", "simclr-resnet18", "--out", "x.h5", "--preset", "fast"]
    )
    assert isinstance(build_attack(args, model, sample).criterion, Contrastive)
    args.attack = "minmax"  # a margin on 128-d projections would be meaningless: refused
    with pytest.raises(CLIError, match="needs --criterion contrastive"):
        build_attack(args, model, sample)
    args.attack, args.criterion = "mine-uae", "contrastive"
    with pytest.raises(CLIError, match="needs a contrastive model"):
        build_attack(args, build_model("conv-ae", (3, 32, 32)), sample)
