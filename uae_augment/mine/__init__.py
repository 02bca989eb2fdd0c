"""Mutual-information estimation: batched per-sample MINE (docs/method.md section 1), a general MINE
estimator and the exact MI of random-projection pairs.

Per-sample MINE estimates how much information a candidate x' = clip(x + delta)
keeps about x from the pair alone: a *sampler* turns x and x' into K paired
samples (u_k, v_k); a *statistics network* T_theta scores pairs; the
Donsker-Varadhan bound

    I(x, x') = mean_k T(u_k, v_k) - log mean_k exp T(u_k, v_pi(k))

is maximised over theta. One idea per module:

* :mod:`.samplers`: the paired samples (feature maps, random projections);
* :mod:`.statistics_network`: B stacked statistics networks, their hand-written
  backward pass and the DV bound;
* :mod:`.per_sample`: :class:`PerSampleMINE` (sub-batched Adam training) and the
  :func:`per_sample_mi` evaluator;
* :mod:`.closed_form`: :func:`projection_mi` and :func:`standardised_projection_mi`;
* :mod:`.estimator`: :func:`estimate_mi`, the ordinary MINE estimator (Belghazi
  et al. 2018) for two sample sets.

Every public name is re-exported here: ``uae_augment.mine`` is the import path
of the MINE API (``uae_augment.mine.PerSampleMINE`` etc.), the submodules are
its layout.
"""

from .closed_form import projection_mi, standardised_projection_mi
from .estimator import estimate_mi
from .per_sample import (
    SUB_BATCH_BYTES,
    SUB_BATCH_MULTIPLE,
    BlockAdam,
    PerSampleMINE,
    make_adam,
    per_sample_mi,
    sub_batch_rows,
)
from .samplers import (
    FeatureMapSampler,
    RandomProjectionSampler,
    Sampler,
    build_sampler,
    find_feature_layer,
)
from .statistics_network import StatisticsNetwork, Workspace, donsker_varadhan

__all__ = [
    "SUB_BATCH_BYTES",
    "SUB_BATCH_MULTIPLE",
    "BlockAdam",
    "FeatureMapSampler",
    "PerSampleMINE",
    "RandomProjectionSampler",
    "Sampler",
    "StatisticsNetwork",
    "Workspace",
    "build_sampler",
    "donsker_varadhan",
    "estimate_mi",
    "find_feature_layer",
    "make_adam",
    "per_sample_mi",
    "projection_mi",
    "standardised_projection_mi",
    "sub_batch_rows",
]
