"""The reference: the manual network's twin built from torch.nn, trained by autograd.

Read it beside ``manual/nn.py``: the class and parameter names are the same, so a state dict moves between
the two key for key.
"""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Linear layers with an activation between them; logits out. Glorot-uniform weights, zero biases.

    Given the same ``generator`` state, the weights equal ``manual.MLP``'s draw for draw: both fill each
    weight with one ``uniform_(-a, a)`` call, layer by layer.
    """

    def __init__(self, sizes, activation: str = "sigmoid", *, dtype=torch.float32, device=None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must be at least two positive integers, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.sizes, self.activation = sizes, activation
        self.layers = nn.ModuleList(nn.Linear(i, o, dtype=dtype, device=device)
                                    for i, o in zip(sizes[:-1], sizes[1:]))
        self.activations = nn.ModuleList(ACTIVATIONS[activation]() for _ in sizes[1:-1])
        # nn.Linear's own init is Kaiming-uniform; the assignment (and manual.Linear) use Glorot.
        with torch.no_grad():
            for layer in self.layers:
                nn.init.xavier_uniform_(layer.weight, generator=generator)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, act in zip(self.layers, self.activations):
            x = act(layer(x))
        return self.layers[-1](x)
