"""UAEAugmented(failed="keep" | "drop" | "clean"): every mode, with and without cache, every item structure."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from uae_augment import Attack, AttackResult, load_dataset
from uae_augment.data.augmented import UAEAugmented

N = 12
KEY = "image"


class EveryThirdFails(Attack):
    """Adversarial = 1 - x; the attack fails on every global index divisible by 3."""

    def models(self) -> list[torch.nn.Module]:
        return []

    def _config(self) -> dict[str, Any]:
        return {}

    def _attack_batch(self, x, y, index):
        success = index.to(x.device) % 3 != 0
        return AttackResult(
            adversarial=1.0 - x,
            success=success,
            mi=torch.zeros(len(x)),
            criterion=torch.zeros(len(x)),
        )


class Items(Dataset):
    """The first N digits as (x, y), bare x or dict items."""

    def __init__(self, structure: str):
        digits = load_dataset("digits")
        self.rows = [digits[i] for i in range(N)]
        self.structure = structure

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> Any:
        x, y = self.rows[i]
        if self.structure == "tuple":
            return x, y
        if self.structure == "bare":
            return x
        return {KEY: x, "id": i}


def sample_of(item: Any) -> torch.Tensor:
    if isinstance(item, dict):
        return item[KEY]
    return item[0] if isinstance(item, tuple) else item


def pair_of(item: Any, structure: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, uae) of a pair-mode item: the item itself for bare samples."""
    return item if structure == "bare" else sample_of(item)


FAILED = [i for i in range(N) if i % 3 == 0]
KEPT = [i for i in range(N) if i % 3 != 0]


def build(tmp_path, structure: str, mode: str, failed: str, cached: bool, **options) -> UAEAugmented:
    return UAEAugmented(
        Items(structure),
        EveryThirdFails(),
        mode=mode,
        failed=failed,
        batch_size=5,
        progress=False,
        sample_key=KEY if structure == "dict" else None,
        cache=tmp_path / f"{structure}.h5" if cached else None,
        **options,
    )


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("structure", ["tuple", "bare", "dict"])
def test_drop_serves_only_successful_uaes_in_concat_and_pair(tmp_path, structure, cached):
    base = Items(structure)
    concat = build(tmp_path, structure, "concat", "drop", cached)
    assert len(concat) == N + len(KEPT) and concat.generated
    for j, i in enumerate(KEPT):
        torch.testing.assert_close(sample_of(concat[N + j]), 1.0 - sample_of(base[i]), atol=0, rtol=0)
    for i in range(N):
        torch.testing.assert_close(sample_of(concat[i]), sample_of(base[i]), atol=0, rtol=0)
    if structure == "dict":
        assert [concat[N + j]["id"] for j in range(len(KEPT))] == KEPT
    pair = build(tmp_path, structure, "pair", "drop", cached)
    assert len(pair) == len(KEPT)
    for j, i in enumerate(KEPT):
        clean, uae = pair_of(pair[j], structure)
        torch.testing.assert_close(clean, sample_of(base[i]), atol=0, rtol=0)
        torch.testing.assert_close(uae, 1.0 - clean, atol=0, rtol=0)


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("structure", ["tuple", "bare", "dict"])
def test_clean_substitutes_the_clean_sample_for_failed_uaes(tmp_path, structure, cached):
    base = Items(structure)
    concat = build(tmp_path, structure, "concat", "clean", cached, return_flag=True)
    assert len(concat) == 2 * N
    for i in range(N):
        item = concat[N + i]
        flag = item["is_uae"] if structure == "dict" else item[-1]
        expected = sample_of(base[i]) if i in FAILED else 1.0 - sample_of(base[i])
        torch.testing.assert_close(sample_of(item), expected, atol=0, rtol=0)
        assert flag is (i not in FAILED)
    pair = build(tmp_path, structure, "pair", "clean", cached)
    assert len(pair) == N
    for i in range(N):
        clean, uae = pair_of(pair[i], structure)
        torch.testing.assert_close(uae, clean if i in FAILED else 1.0 - clean, atol=0, rtol=0)


@pytest.mark.parametrize("failed", ["drop", "clean"])
def test_replace_mode_serves_failed_uaes_clean(tmp_path, failed):
    base = Items("tuple")
    keep = build(tmp_path, "tuple", "replace", "keep", False, p=1.0, return_flag=True)
    other = build(tmp_path, "tuple", "replace", failed, False, p=1.0, return_flag=True)
    assert len(keep) == len(other) == N
    for i in range(N):
        x, _, flag = other[i]
        assert keep[i][2] is True and flag is (i not in FAILED)
        torch.testing.assert_close(x, base[i][0] if i in FAILED else 1.0 - base[i][0], atol=0, rtol=0)


def test_keep_is_the_default_and_serves_failed_uaes(tmp_path):
    ds = build(tmp_path, "tuple", "concat", "keep", False)
    assert ds.failed == "keep" and len(ds) == 2 * N and not ds.generated
    torch.testing.assert_close(ds[N][0], 1.0 - Items("tuple")[0][0], atol=0, rtol=0)


def test_unknown_failed_policy_raises(tmp_path):
    with pytest.raises(ValueError, match=r"failed must be one of \('keep', 'drop', 'clean'\), got 'skip'"):
        build(tmp_path, "tuple", "concat", "skip", False)
