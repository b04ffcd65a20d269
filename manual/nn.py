"""Layers whose forward and backward passes are written by hand.

Every module follows the cs231n layer pattern: ``forward`` keeps the few tensors its backward needs in
``self.cache``; ``backward(dout)`` takes dL/d(output), fills ``p.grad`` for each of the module's own
parameters and returns dL/d(input). Nothing here touches autograd: the parameters are plain tensors with
``requires_grad=False`` and every gradient is a formula from ``docs/derivations.md``.

Shapes: N is the batch size, D_in / D_out the feature sizes, C the number of classes.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Iterator

import torch

from . import gemm

__all__ = [
    "Module", "Linear", "Sigmoid", "ReLU", "Tanh", "Softmax", "CrossEntropyLoss", "NLLLoss", "MLP",
    "ACTIVATIONS",
]


class Module:
    """The little of ``torch.nn.Module`` a hand-written network needs.

    Parameters are tensors registered with :meth:`register_parameter`; children are attributes holding a
    ``Module`` or a list of them. Names follow ``torch.nn.Module`` (``layers.0.weight``), so a state dict
    moves between a manual network and its ``torch.nn`` twin key for key.
    """

    def __init__(self) -> None:
        self._params: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache = None

    def register_parameter(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        self._params[name] = tensor
        setattr(self, name, tensor)
        return tensor

    def children(self) -> Iterator[tuple[str, "Module"]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
        for name in self._params:
            # Read the attribute, not the registry: load_state_dict and .to() rebind it.
            yield prefix + name, getattr(self, name)
        for child_name, child in self.children():
            yield from child.named_parameters(prefix + child_name + ".")

    def parameters(self) -> list[torch.Tensor]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """Name -> tensor, sharing storage with the parameters, like ``torch.nn.Module.state_dict``."""
        return OrderedDict(self.named_parameters())

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Copy values in place; with ``strict`` the key sets must match exactly, and shapes always must."""
        own = dict(self.named_parameters())
        if strict:
            missing = sorted(set(own) - set(state_dict))
            unexpected = sorted(set(state_dict) - set(own))
            if missing or unexpected:
                raise KeyError(f"state dict keys do not match: missing {missing}, unexpected {unexpected}")
        for name, value in state_dict.items():
            if name not in own:
                continue
            if tuple(value.shape) != tuple(own[name].shape):
                raise ValueError(
                    f"shape mismatch for {name}: checkpoint has {tuple(value.shape)}, "
                    f"model has {tuple(own[name].shape)}")
            with torch.no_grad():
                own[name].copy_(value)

    def to(self, device=None, dtype=None) -> "Module":
        """Move every parameter (and its grad) to ``device`` / ``dtype``, in place, like ``nn.Module.to``."""
        for module in self.modules():
            for name in module._params:
                old = getattr(module, name)
                new = old.to(device=device, dtype=dtype)
                if old.grad is not None:
                    new.grad = old.grad.to(device=device, dtype=dtype)
                module._params[name] = new
                setattr(module, name, new)
            module.cache = None
        return self

    def modules(self) -> Iterator["Module"]:
        yield self
        for _, child in self.children():
            yield from child.modules()

    def __call__(self, *args):
        with torch.no_grad():
            return self.forward(*args)

    def forward(self, *args):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def backward(self, dout):  # pragma: no cover
        raise NotImplementedError

    def _cached(self):
        if self.cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self.cache


# The 1 of 1 - s, made once: a Python 1 is wrapped into a new tensor on every call, which costs more than the
# subtraction at batch size 1. A 0-dim tensor takes the other operand's dtype and may sit on the CPU beside
# a CUDA tensor, so the result is the same tensor, bit for bit.
_ONE = torch.ones(())


def _grad_buffer(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, allocated on first use; every backward then overwrites it in place (``out=``).

    Steady-state training so allocates no gradient memory, and whoever holds ``p.grad`` (an optimiser)
    sees the new values. torch checks that an assigned ``.grad`` matches ``p`` in shape, dtype and device,
    so an existing one always fits.
    """
    if p.grad is None:
        p.grad = torch.empty_like(p, memory_format=torch.contiguous_format)
    return p.grad


class Linear(Module):
    """y = x W^T + b with ``weight`` (D_out, D_in) and ``bias`` (D_out,), as ``torch.nn.Linear``.

    Weights are Glorot-uniform, U(-a, a) with a = sqrt(6 / (D_in + D_out)); biases start at zero.
    """

    def __init__(self, in_features: int, out_features: int, *, dtype=torch.float32, device=None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # sqrt(3) * sqrt(2 / (fan_in + fan_out)) = sqrt(6 / (fan_in + fan_out)), written in the order
        # torch.nn.init.xavier_uniform_ uses so that both round to the same float64 bound.
        a = math.sqrt(3.0) * math.sqrt(2.0 / (in_features + out_features))
        weight = torch.empty(out_features, in_features, dtype=dtype, device=device)
        weight.uniform_(-a, a, generator=generator)
        self.register_parameter("weight", weight)
        self.register_parameter("bias", torch.zeros(out_features, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, D_in) -> y = x W^T + b, (N, D_out)."""
        self.cache = x
        # One matrix product with the bias added; gemm.py picks the library (MKL or oneDNN) that computes
        # it fastest for this shape, and the layout.
        return gemm.affine(x, self.weight, self.bias)

    def backward(self, dout: torch.Tensor, input_grad: bool = True,
                 sgd_lr: float | None = None) -> torch.Tensor | None:
        """dout (N, D_out) -> dx = dout W, (N, D_in); sets weight.grad = dout^T x (D_out, D_in) and
        bias.grad = sum_n dout (D_out,).

        ``input_grad=False``: dx is not computed and None is returned. A network's first layer needs no
        gradient for its input, the data, and skipping it saves a matrix product as large as the forward.

        ``sgd_lr``: apply plain SGD here instead of filling ``.grad`` (which is then left as it was).
        W <- W - lr dout^T x adds the product straight into W (with MKL inside the gemm itself, addmm_ with
        alpha = -lr), so no separate optimiser pass reads the gradient back; b <- b - lr sum_n dout likewise.
        """
        x = self._cached()
        dout_t = dout.t()                                                    # (D_out, N)
        dx = gemm.input_grad(dout_t, self.weight) if input_grad else None  # from W before any update
        if sgd_lr is None:
            gemm.weight_grad(dout_t, x, out=_grad_buffer(self.weight))
            torch.sum(dout, 0, out=_grad_buffer(self.bias))
        else:
            gemm.add_weight_grad_(self.weight, dout_t, x, alpha=-sgd_lr)
            # sum_n dout at N = 1 is the row itself: a view instead of a reduction (same value, exactly).
            self.bias.add_(dout[0] if dout.shape[0] == 1 else dout.sum(0), alpha=-sgd_lr)
        return dx

    def __repr__(self) -> str:
        return f"Linear(in_features={self.in_features}, out_features={self.out_features})"


class Sigmoid(Module):
    """s = 1 / (1 + exp(-x)); ds/dx = s (1 - s), so only the output is cached."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x)
        self.cache = s
        return s

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        s = self._cached()
        # 1 - s is exact where s is near 1 (s - s*s would not be); then two products in place.
        return (_ONE - s).mul_(s).mul_(dout)

    def __repr__(self) -> str:
        return "Sigmoid()"


class ReLU(Module):
    """max(x, 0); the derivative is 1 where x > 0 and 0 elsewhere (0 at x = 0, as torch uses)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache = x > 0
        return x.clamp_min(0)

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        return dout * self._cached()

    def __repr__(self) -> str:
        return "ReLU()"


class Tanh(Module):
    """t = tanh(x); dt/dx = 1 - t^2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(x)
        self.cache = t
        return t

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        t = self._cached()
        return (_ONE - t * t).mul_(dout)

    def __repr__(self) -> str:
        return "Tanh()"


ACTIVATIONS = {"sigmoid": Sigmoid, "relu": ReLU, "tanh": Tanh}


class Softmax(Module):
    """Row-wise softmax, y_i = exp(o_i) / sum_j exp(o_j), for (N, C) logits.

    The backward is question 1's Jacobian dy_i/do_j = y_i (delta_ij - y_j) applied to dout without forming
    the (C, C) matrix: do = y * (dout - sum_i dout_i y_i).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # exp of (x - max) never overflows and leaves the ratio unchanged.
        e = (x - x.amax(dim=1, keepdim=True)).exp()
        y = e / e.sum(dim=1, keepdim=True)
        self.cache = y
        return y

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        y = self._cached()
        return y * (dout - (dout * y).sum(dim=1, keepdim=True))

    def __repr__(self) -> str:
        return "Softmax()"


def _check_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"expected logits of shape (N, C), got {tuple(logits.shape)}")
    if target.shape != (logits.shape[0],):
        raise ValueError(f"expected target of shape ({logits.shape[0]},), got {tuple(target.shape)}")


class CrossEntropyLoss(Module):
    """Softmax and negative log-likelihood fused: L = mean_n (logsumexp(o_n) - o_n[c_n]).

    ``forward(logits (N, C), target (N,) int64)`` returns a 0-dim tensor; ``backward()`` returns
    dL/do = (softmax(o) - onehot(c)) / N, the mean reduction's 1/N included.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_target(logits, target)
        # log_probs = o - logsumexp(o) row by row, (N, C); torch's log_softmax subtracts the row max first,
        # so no exp overflows. It runs on the (C, N) view: with the classes as the outer dimension its
        # kernel vectorises over the batch (3-10x faster for C = 10), and Linear's logits are stored that
        # way anyway.
        n = logits.shape[0]
        log_probs = (torch.log_softmax(logits, dim=1) if n == 1             # one row: the same memory
                     else torch.log_softmax(logits.t(), dim=0).t())
        column = target.unsqueeze(1)                                # (N, 1): c_n, for gather and scatter
        self.cache = (log_probs, column)
        # -mean_n log_probs[n, c_n], as a sum divided by -N: cheaper than mean() then a negation, same bits.
        picked = log_probs.gather(1, column).sum()
        return picked.neg_() if n == 1 else picked.div_(-n)  # -x / 1 == -x; neg_ skips wrapping the 1

    def backward(self, dloss: float | torch.Tensor = 1.0) -> torch.Tensor:
        log_probs, column = self._cached()
        n = log_probs.shape[0]
        grad = log_probs.exp()                                      # softmax(o), (N, C)
        grad.scatter_(1, column, -1.0, reduce="add")                # minus onehot(c): row n, column c_n
        scale = dloss / n
        return grad if isinstance(scale, float) and scale == 1.0 else grad.mul_(scale)  # x 1 changes no bit

    def __repr__(self) -> str:
        return "CrossEntropyLoss()"


class NLLLoss(Module):
    """Negative log-likelihood on probabilities: L = -mean_n log y_n[c_n] (question 1's loss alone).

    With :class:`Softmax` before it this is the unfused path; its backward is the local derivative
    dL/dy = -onehot(c) / (N y), which divides by y and so is both slower and less stable than
    :class:`CrossEntropyLoss`. It exists to show the two paths agree.
    """

    def forward(self, probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_target(probs, target)
        picked = probs.gather(1, target.unsqueeze(1))
        self.cache = (probs, target, picked)
        return -picked.log().mean()

    def backward(self, dloss: float | torch.Tensor = 1.0) -> torch.Tensor:
        probs, target, picked = self._cached()
        n = probs.shape[0]
        grad = torch.zeros_like(probs)
        grad.scatter_(1, target.unsqueeze(1), -dloss / (n * picked))
        return grad

    def __repr__(self) -> str:
        return "NLLLoss()"


class MLP(Module):
    """Linear layers with an activation between them: sizes [784, 300, 10] is 784 -> 300 sigmoid -> 10.

    The output is raw logits (N, sizes[-1]); pair it with :class:`CrossEntropyLoss`. Parameter names
    (``layers.0.weight`` ...) and shapes match ``lightning_ref.MLP``.
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
        self.layers = [Linear(i, o, dtype=dtype, device=device, generator=generator)
                       for i, o in zip(sizes[:-1], sizes[1:])]
        # One activation object per hidden layer: each keeps its own cache.
        self.activations = [ACTIVATIONS[activation]() for _ in sizes[1:-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, sizes[0]) -> logits (N, sizes[-1])."""
        for layer, act in zip(self.layers, self.activations):
            x = act.forward(layer.forward(x))
        return self.layers[-1].forward(x)

    def backward(self, dout: torch.Tensor, input_grad: bool = True,
                 sgd_lr: float | None = None) -> torch.Tensor | None:
        """dout = dL/dlogits (N, sizes[-1]) -> dL/dx (N, sizes[0]); fills every parameter's grad.

        Training passes ``input_grad=False``: the input is data, so dL/dx is skipped and None returned.
        With ``sgd_lr`` each layer applies plain SGD as soon as its gradient is known, instead of filling
        ``.grad`` (see :meth:`Linear.backward`); the layer below gets dx computed from the old weights.
        """
        last = len(self.layers) - 1
        for i in range(last, -1, -1):          # output layer first, back to the input
            if i < last:
                dout = self.activations[i].backward(dout)
            dout = self.layers[i].backward(dout, input_grad=input_grad or i > 0, sgd_lr=sgd_lr)
        return dout

    def __repr__(self) -> str:
        return f"MLP(sizes={self.sizes}, activation={self.activation!r})"
