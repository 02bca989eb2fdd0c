"""Concrete autoencoder (Abid, Balin, Zou 2019): differentiable selection of K input features.

:class:`ConcreteSelector` holds K x d logits. In training each row is a
Gumbel-softmax ("concrete") relaxation of a one-hot vector at temperature T,
annealed exponentially per optimisation step from ``start_temp`` to
``end_temp``; at evaluation each row is a hard one-hot, so the selector returns
K of the d input features. :class:`ConcreteAutoencoder` puts the release's
decoder (320-320-d, LeakyReLU 0.2, dropout 0.1) behind it; :func:`uae_augment.training.fit_concrete`
applies the authors' retry rule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_positive
from .base import (
    ADAM_KERAS,
    FitSettings,
    LossParts,
    ReferenceModel,
    check_input,
    flat_size,
    normalise_shape,
    positive_int,
)

logger = logging.getLogger(__name__)


class ConcreteSelector(nn.Module):
    """Selects K of d features: concrete samples in training, distinct one-hots at eval.

    Temperature after ``s`` optimisation steps of a schedule of ``total_steps``:
    T(s) = start_temp * (end_temp / start_temp) ** (s / total_steps), and
    ``end_temp`` from step ``total_steps`` on (the authors' per-step decay
    alpha = (end/start) ** (1 / total_steps), in closed form). The step counter
    and the schedule are buffers, so they travel with ``state_dict``.

    In training one Gumbel draw of shape (K, d) is shared by the whole batch,
    as in the authors' ``ConcreteSelect`` layer. At evaluation the authors take
    the argmax of every row, which can select one feature twice; here the K
    features are made distinct by a greedy assignment: repeatedly the (row,
    feature) pair with the highest selection probability among unassigned rows
    and unused features is fixed. When the row argmaxes are already distinct
    (the usual case after convergence) this is exactly the argmax.

    Args:
        input_dim: d, the number of input features.
        k: K, the number of features to select (K <= d).
        start_temp: initial temperature (authors: 10).
        end_temp: final temperature (authors: 0.1).
        total_steps: optimisation steps of the annealing schedule; when None,
            :meth:`~ConcreteAutoencoder.on_fit_start` sets it to the steps of the
            fit about to run.

    Raises:
        ValueError: if ``k`` is not in [1, d] or a temperature is not positive.

    Example:
        >>> import torch
        >>> selector = ConcreteSelector(input_dim=10, k=3, total_steps=100)
        >>> selector.eval()(torch.rand(4, 10)).shape, len(set(selector.selected_features().tolist()))
        (torch.Size([4, 3]), 3)
    """

    def __init__(
        self,
        input_dim: int,
        k: int,
        start_temp: float = 10.0,
        end_temp: float = 0.1,
        total_steps: int | None = None,
    ):
        super().__init__()
        (input_dim,) = normalise_shape(input_dim, name="input_dim")
        (k,) = normalise_shape(k, name="k")
        if k > input_dim:
            raise ValueError(f"k must be at most input_dim={input_dim} to select distinct features, got {k}")
        check_positive(start_temp, "start_temp")
        check_positive(end_temp, "end_temp")
        self.input_dim, self.k = input_dim, k
        self.start_temp, self.end_temp = float(start_temp), float(end_temp)
        self.logits = nn.Parameter(torch.empty(k, input_dim))
        nn.init.xavier_normal_(self.logits)  # Keras glorot_normal, as the authors
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("total_steps", torch.zeros((), dtype=torch.long))
        self.schedule_fixed = total_steps is not None
        if total_steps is not None:
            self.reset_schedule(total_steps)
        self._assignment: tuple[tuple[int, int], torch.Tensor] | None = None

    def reset_schedule(self, total_steps: int) -> None:
        """Restarts the annealing: step 0 of a schedule of ``total_steps`` steps."""
        (total_steps,) = normalise_shape(total_steps, name="total_steps")
        self.total_steps.fill_(total_steps)
        self.step.zero_()

    def temperature(self, step: int | None = None) -> float:
        """T at ``step`` (default: the current step), per the closed form above."""
        total = int(self.total_steps)
        if total < 1:
            raise RuntimeError(
                "the selector has no annealing schedule: pass total_steps, call reset_schedule,"
                " or train it with uae_augment.fit (which sets it)"
            )
        step = int(self.step) if step is None else step
        if step >= total:
            return self.end_temp
        return self.start_temp * (self.end_temp / self.start_temp) ** (step / total)

    def advance(self) -> None:
        """Counts one optimisation step (the temperature follows)."""
        self.step += 1

    def probabilities(self) -> torch.Tensor:
        """softmax(logits) per row: (K, d), rows sum to 1."""
        return self.logits.detach().softmax(dim=-1)

    def mean_max_probability(self) -> float:
        """Mean over the K rows of the largest selection probability (1.0 = converged)."""
        return float(self.probabilities().max(dim=-1).values.mean())

    def selected_features(self) -> torch.Tensor:
        """The K distinct selected feature indices (K,) int64, in row order (see the class doc)."""
        version = (self.logits.data_ptr(), self.logits._version)
        if self._assignment is None or self._assignment[0] != version:
            self._assignment = (version, distinct_assignment(self.probabilities()))
        return self._assignment[1].to(self.logits.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Selects from x (N, d): returns (N, K) (soft mixtures in training, features at eval)."""
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"ConcreteSelector expects inputs of shape (N, {self.input_dim}), got {tuple(x.shape)}")
        if not self.training:
            return x[:, self.selected_features()]
        uniform = torch.rand_like(self.logits).clamp_min(torch.finfo(self.logits.dtype).eps)
        gumbel = -torch.log(-torch.log(uniform))
        samples = F.softmax((self.logits + gumbel) / self.temperature(), dim=-1)
        return x @ samples.T


def distinct_assignment(probabilities: torch.Tensor) -> torch.Tensor:
    """Greedy distinct assignment of K rows to K of d columns by descending probability.

    Args:
        probabilities: (K, d) with K <= d.

    Returns:
        (K,) int64: the column of each row, all distinct.
    """
    scores = probabilities.detach().clone().float()
    k = scores.shape[0]
    columns = torch.empty(k, dtype=torch.long, device=scores.device)
    for _ in range(k):
        flat = int(scores.argmax())
        row, column = divmod(flat, scores.shape[1])
        columns[row] = column
        scores[row, :] = -math.inf
        scores[:, column] = -math.inf
    return columns.cpu()


class ConcreteAutoencoder(ReferenceModel):
    """The concrete autoencoder of the release: selector + decoder 320-320-d.

    Decoder: Linear(K, 320), LeakyReLU(0.2), Dropout(0.1), Linear(320, 320),
    LeakyReLU(0.2), Dropout(0.1), Linear(320, d): a linear output, as in the
    authors' and the release's code. Training minimises the MSE of that linear
    output; ``forward`` returns it clamped to [0, 1] so the reconstruction can
    be used where inputs live (the clamp only changes values that overshoot the
    data range). Adam lr 1e-3 (Keras' eps 1e-7), batch max(N // 256, 16),
    800 epochs (the release's MNIST setting); the temperature steps once per
    optimisation step over the steps of each :func:`uae_augment.fit` call (unless
    ``total_steps`` is given). Use :func:`uae_augment.training.fit_concrete` for the retry rule.

    Args:
        input_shape: shape of one input, e.g. (1, 28, 28) or (617,).
        k: number of selected features (release: 50; 10 for Mice Protein).
        start_temp, end_temp, total_steps: the selector's schedule
            (see :class:`ConcreteSelector`).
        hidden: decoder widths (release: (320, 320)).
        dropout: decoder dropout (release: 0.1).
        epochs: default number of epochs of :meth:`default_fit` (release: 800 for MNIST).

    Attributes:
        selector: the :class:`ConcreteSelector`.
        first_layer: None (no convolution: MINE uses random projections).

    Example:
        >>> import torch
        >>> model = ConcreteAutoencoder((1, 8, 8), k=5, total_steps=10).eval()
        >>> model(torch.rand(3, 1, 8, 8)).shape, model.selected_features().shape
        (torch.Size([3, 1, 8, 8]), torch.Size([5]))
    """

    def __init__(
        self,
        input_shape: Sequence[int] | int = (1, 28, 28),
        k: int = 50,
        *,
        start_temp: float = 10.0,
        end_temp: float = 0.1,
        total_steps: int | None = None,
        hidden: Sequence[int] = (320, 320),
        dropout: float = 0.1,
        epochs: int = 800,
    ):
        super().__init__()
        self.input_shape = normalise_shape(input_shape)
        hidden = normalise_shape(hidden, name="hidden")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.epochs = positive_int(epochs, "epochs")
        features = flat_size(self.input_shape)
        self.first_layer = None
        self.selector = ConcreteSelector(features, k, start_temp, end_temp, total_steps)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip((k, *hidden[:-1]), hidden):
            layers += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
        self.decoder = nn.Sequential(*layers, nn.Linear(hidden[-1], features))

    def default_fit(self, num_samples: int) -> FitSettings:
        """``epochs`` epochs with the authors' batch size max(N // 256, 16)."""
        return FitSettings(epochs=self.epochs, batch_size=max(num_samples // 256, 16))

    def on_fit_start(self, total_steps: int) -> None:
        """Anneals the temperature over the fit about to run (unless the schedule is fixed)."""
        if not self.selector.schedule_fixed:
            self.selector.reset_schedule(total_steps)

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """The selected features of x (N, *input_shape): (N, K)."""
        check_input(x, self.input_shape, type(self).__name__)
        return self.selector(x.flatten(1))

    def reconstruct_linear(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's unclamped output for x (N, *input_shape): (N, *input_shape)."""
        return self.decoder(self.select(x)).view(len(x), *self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructs x (N, *input_shape) in [0, 1]; returns (N, *input_shape) in [0, 1]."""
        return self.reconstruct_linear(x).clamp(0.0, 1.0)

    def selected_features(self) -> torch.Tensor:
        """Indices (K,) of the selected features in the flattened input (all distinct)."""
        return self.selector.selected_features()

    def mean_max_probability(self) -> float:
        """The selector's mean max selection probability (target: 0.998)."""
        return self.selector.mean_max_probability()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), **ADAM_KERAS)]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, LossParts]:
        return F.mse_loss(self.reconstruct_linear(x), x), {}

    def training_step(
        self, x: torch.Tensor, y: torch.Tensor | None, optimizers: Sequence[torch.optim.Optimizer]
    ) -> dict[str, float]:
        """One Adam step on the MSE, then one temperature step."""
        temperature = self.selector.temperature()
        values = super().training_step(x, y, optimizers)
        self.selector.advance()
        return {**values, "temperature": temperature}
