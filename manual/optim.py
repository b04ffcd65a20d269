"""Stochastic gradient descent written out, with torch.optim.SGD's exact update rule."""
from __future__ import annotations

import torch


class SGD:
    """p <- p - lr * v, where v = g + weight_decay * p, or with momentum the running
    buf <- momentum * buf + v (buf = v on the first step), as ``torch.optim.SGD`` with dampening 0.

    Reads each parameter's ``.grad`` (set by a manual ``backward``) and updates the tensors in place.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD got an empty parameter list")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.momentum_buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @property
    def plain(self) -> bool:
        """True for p <- p - lr * g exactly (no momentum, no weight decay). That update needs nothing but
        the gradient, so a layer can apply it during its backward pass, where the gradient is computed
        (``MLP.backward(dout, sgd_lr=lr)``), instead of writing ``.grad`` for :meth:`step` to read back."""
        return not self.momentum and not self.weight_decay

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            if self.momentum:
                buf = self.momentum_buffers[i]
                if buf is None:
                    buf = self.momentum_buffers[i] = g.clone()
                else:
                    buf.mul_(self.momentum).add_(g)
                g = buf
            p.add_(g, alpha=-self.lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "momentum_buffers": [None if b is None else b.clone() for b in self.momentum_buffers]}

    def load_state_dict(self, state: dict) -> None:
        buffers = state["momentum_buffers"]
        if len(buffers) != len(self.params):
            raise ValueError(f"optimizer state holds {len(buffers)} buffers, model has {len(self.params)}")
        self.momentum_buffers = [None if b is None else b.to(p.device, p.dtype).clone()
                                 for b, p in zip(buffers, self.params)]
