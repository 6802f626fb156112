"""Network building blocks: the MLP trunk and a batched ensemble of Q-functions.

The twin critics of SAC are one :class:`EnsembleMLP`: the weights of all members are stacked, so each
layer is one batched matmul for every member (DESIGN.md, performance principle 2).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def fanin_init_(linear: nn.Linear, bias: float = 0.1) -> None:
    """rlkit's ``fanin_init``: U(-1/sqrt(out_features), +) on the weight, constant bias (docs/algorithms.md)."""
    bound = 1.0 / math.sqrt(linear.weight.shape[0])
    nn.init.uniform_(linear.weight, -bound, bound)
    nn.init.constant_(linear.bias, bias)


def mlp(
    in_dim: int,
    hidden: list[int],
    out_dim: int | None = None,
    activation=nn.ReLU,
    orthogonal: bool = False,
    out_gain: float = 1.0,
) -> nn.Sequential:
    """Linear+activation for each hidden size, then an optional linear output layer.

    Init: rlkit's fan-in for the hidden layers (SAC, docs/algorithms.md) or, with ``orthogonal=True``, the
    PPO convention (orthogonal, gain sqrt(2) hidden and ``out_gain`` for the output, zero biases).
    """
    layers: list[nn.Module] = []
    for size in hidden:
        linear = nn.Linear(in_dim, size)
        if orthogonal:
            nn.init.orthogonal_(linear.weight, math.sqrt(2.0))
            nn.init.zeros_(linear.bias)
        else:
            fanin_init_(linear)
        layers += [linear, activation()]
        in_dim = size
    if out_dim is not None:
        out = nn.Linear(in_dim, out_dim)
        if orthogonal:
            nn.init.orthogonal_(out.weight, out_gain)
            nn.init.zeros_(out.bias)
        layers.append(out)
    return nn.Sequential(*layers)


class EnsembleMLP(nn.Module):
    """``n`` independent MLPs with stacked weights, evaluated with one batched matmul per layer.

    ``forward(x)`` takes ``x`` of shape (B, in) (shared by all members) or (n, B, in) and returns
    (n, B, out). Each member is initialised like an ``nn.Linear`` stack (PyTorch default init).
    """

    def __init__(self, n: int, in_dim: int, hidden: list[int], out_dim: int = 1):
        super().__init__()
        self.n = n
        sizes = [in_dim, *hidden, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(n, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, fan_out).uniform_(-bound, bound)))

    def _params(self, i: int, detach: bool) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = self.weights[i], self.biases[i]
        return (w.detach(), b.detach()) if detach else (w, b)

    def forward(self, x: torch.Tensor, detach_params: bool = False, start: int = 0) -> torch.Tensor:
        """Evaluate all members. ``detach_params=True`` lets gradients reach ``x`` but not the weights
        (the actor step differentiates through the critic without computing its weight gradients).
        ``start=i``: ``x`` (n, B, sizes[i]) is the input of layer i (a caller that computed the first layers)."""
        if x.dim() == 2:
            x = x.expand(self.n, *x.shape)
        last = len(self.weights) - 1
        for i in range(start, len(self.weights)):
            w, b = self._params(i, detach_params)
            if i == last and w.shape[-1] == 1:
                # a scalar output (Q-value): multiply-and-sum; bmm with one output column, and its backward
                # (an outer product), take ~5x longer on CPU
                x = (x * w.transpose(1, 2)).sum(-1, keepdim=True) + b
            else:
                # bmm + in-place bias/ReLU: baddbmm would first copy the broadcast bias into the output
                x = torch.bmm(x, w).add_(b)
                if i < last:
                    x = x.relu_()
        return x


class TwinQ(nn.Module):
    """Twin soft Q-functions Q_i(s, a) as one ensemble; returns (2, B)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], n: int = 2):
        super().__init__()
        self.net = EnsembleMLP(n, obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """Q-values of ``act`` (B, A) -> (n, B), or of K candidate actions per state (B, K, A) -> (n, B, K).

        The first layer is split into its observation and action parts, so K candidates per state share
        one projection of the observation (no concatenation, no repeated rows)."""
        w, b = self.net._params(0, detach_params)
        n, obs_dim = self.net.n, obs.shape[-1]
        h = torch.baddbmm(b, obs.expand(n, *obs.shape), w[:, :obs_dim])  # (n, B, H)
        if act.dim() == 2:
            x = torch.bmm(act.expand(n, *act.shape), w[:, obs_dim:]).add_(h)
            return self.net(x.relu_(), detach_params, start=1).squeeze(-1)
        bsz, k, a = act.shape
        x = torch.bmm(act.reshape(1, bsz * k, a).expand(n, -1, -1), w[:, obs_dim:])  # (n, B*K, H)
        x.view(n, bsz, k, -1).add_(h.unsqueeze(2))  # each state's projection, shared by its K actions
        return self.net(x.relu_(), detach_params, start=1).view(n, bsz, k)


def adam(params, device: torch.device, capturable: bool = False, **kwargs) -> torch.optim.Adam:
    """Adam, fused into one kernel where PyTorch has one for the device (CPU, CUDA); the reference
    implementation elsewhere (e.g. the ``meta`` device of the device tests). ``capturable``: its step count
    stays on the device, as CUDA graphs need."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.Adam(params, fused=fused, capturable=capturable, **kwargs)


class FlatParameters:
    """Re-home a list of parameters (and their gradients) as views of one flat tensor.

    The optimiser, gradient clipping and zeroing then touch one tensor instead of one per layer, which
    on small networks (PPO's 64-unit MLPs) is most of their cost. The modules keep working as before:
    their parameters are views, ``load_state_dict`` copies into them in place, and autograd accumulates
    into the views of ``flat.grad``. Zero with :meth:`zero_grad`, never with ``set_to_none`` (that would
    detach the views). Build after moving the modules to their device.
    """

    def __init__(self, params: list[nn.Parameter]):
        self.flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
        self.flat.grad = torch.zeros_like(self.flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.data = self.flat.data[offset : offset + n].view_as(p)
            p.grad = self.flat.grad[offset : offset + n].view_as(p)
            offset += n

    def zero_grad(self) -> None:
        self.flat.grad.zero_()
