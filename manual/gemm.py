"""The three matrix products of a linear layer, each on the faster of the two GEMM libraries inside torch.

``torch.mm`` on the CPU calls MKL, and MKL's sgemm runs its AVX2 code on AMD processors even where they have
AVX-512. oneDNN, the other library torch ships (behind its ``mkldnn`` ops), uses AVX-512 there: on a 2-core
AMD EPYC Zen 5 host, a 2048 x 2048 float32 product runs at ~490 GFLOP/s against MKL's ~225, and the first
layer's products of a 784-300-10 step at batch size 128 take half the time. oneDNN costs ~10 us per call to
set up, so small products stay on ``torch.mm``/``addmm``; on processors without full-width AVX-512, so do
products of small batches (``min_batch``).

The choice depends on dtype, device, shapes and the processor's family only, never on a timing, so a run on
one machine is reproducible bit for bit. The two libraries sum in different orders, so their results differ
in the last bits (float32 rounding); the parity tests cover both paths. ``MIRROR_ONEDNN=0`` in the
environment turns oneDNN off.

Shapes follow ``torch.nn.Linear``: x (N, D_in), weight (D_out, D_in), dout (N, D_out).
"""
from __future__ import annotations

import os

import torch

from mirror.cpu import cpu_info

# Smallest product (multiply-adds) and inner dimension worth oneDNN's setup cost, measured on the Zen 5 host
# above: the first layer's forward from batch 8 on, its weight gradient from batch 24, the last layer's
# products from batch 500.
MIN_MACS = 1_500_000
MIN_INNER = 24


def min_batch(info: dict) -> int:
    """Smallest batch size whose products go to oneDNN on the processor ``info`` describes (``cpu_info``).

    AMD's family 25 has no full-width AVX-512 (Zen 3 has none, Zen 4 runs it as two 256-bit halves), so
    oneDNN's edge over MKL's AVX2 code is small: 189 against 146 GFLOP/s for a 2048 x 2048 product on a
    2-core Zen 4. There a training epoch with every product on MKL was 1.15-1.23x faster than with this
    module's oneDNN routing at batch sizes 16-64, 1.06-1.09x at 128 and 1.03x at 256, and 1.14x slower at 512
    and 1024 (medians of 7 alternated runs of ``train_step``, 2026-11-30).
    Elsewhere, the thresholds above decide alone: they were measured on a Zen 5 (family 26); other processors
    have not been measured.
    """
    return 256 if (info.get("cpu_vendor"), info.get("cpu_family")) == ("AuthenticAMD", "25") else 1


MIN_BATCH = min_batch(cpu_info())


def _find_onednn():
    if os.environ.get("MIRROR_ONEDNN", "1") == "0" or not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise.default  # a private op (Inductor's); probe it before use
        x, w, b = torch.ones(2, 3), torch.ones(4, 3), torch.ones(4)
        if not torch.equal(op(x, w, b, "none", [], ""), torch.full((2, 4), 4.0)):
            return None
        return op
    except (AttributeError, RuntimeError):
        return None


_ONEDNN = _find_onednn()


def onednn_available() -> bool:
    return _ONEDNN is not None


def uses_onednn(a: torch.Tensor, m: int, n: int, k: int, batch: int, min_inner: int = MIN_INNER) -> bool:
    """Whether an (m x k) @ (k x n) product of ``a``'s dtype and device, one of whose dimensions is the batch
    size ``batch``, goes to oneDNN."""
    # The integer tests first: at batch size 1 they settle it without touching the tensor.
    return (batch >= MIN_BATCH and k >= min_inner and m * n * k >= MIN_MACS and _ONEDNN is not None
            and a.dtype == torch.float32 and a.device.type == "cpu")


def _onednn(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """a @ b_t^T: oneDNN's linear takes its second factor transposed, as nn.Linear's weight. ``a`` should
    be contiguous (the op copies it otherwise); ``b_t`` may be a transposed view, read as it is."""
    return _ONEDNN(a, b_t, None, "none", [], "")


# Every result is feature-major, (D, N) in memory and handed back as its (N, D) transposed view, on either
# library: with the activations that way the weight gradient's first factor dout^T is contiguous, which
# oneDNN needs, and an activation's backward multiplies tensors of one layout (mixed layouts made it 8x
# slower at N = 1024). MKL also writes this layout fastest (5-10% at N = 32-128).

def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x W^T + b, (N, D_out), as y^T = W x^T + b."""
    n, d_in = x.shape
    if n == 1:  # per-instance SGD: a matrix-vector product, with fewer calls around it
        return torch.addmv(bias, weight, x[0]).unsqueeze(0)
    if uses_onednn(x, weight.shape[0], n, d_in, batch=n):
        return _onednn(weight, x).add_(bias.unsqueeze(1)).t()
    return torch.addmm(bias.unsqueeze(1), weight, x.t()).t()  # the bias added inside the same call


# The backward products take dout^T, (D_out, N): a layer transposes dout once for both.

def input_grad(dout_t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """dx = dout W, (N, D_in), as dx^T = W^T dout^T."""
    d_out, n = dout_t.shape
    if n == 1:  # one row: both layouts are the same memory, and this is the shortest way there
        return torch.mm(dout_t.t(), weight)
    # The inner dimension here is D_out, 10 for the last layer: oneDNN still wins once N is large
    # (46 us against 102 us at N = 1024, the output being 300 x N).
    if uses_onednn(dout_t, weight.shape[1], n, d_out, batch=n, min_inner=1):
        return _onednn(weight.t().contiguous(), dout_t.t()).t()
    return torch.mm(weight.t(), dout_t).t()


def weight_grad(dout_t: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = dout^T x, (D_out, D_in), written in place."""
    if uses_onednn(dout_t, dout_t.shape[0], x.shape[1], x.shape[0], batch=x.shape[0]):
        return out.copy_(_onednn(dout_t, x.t()))
    return torch.mm(dout_t, x, out=out)


def add_weight_grad_(weight: torch.Tensor, dout_t: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """weight += alpha dout^T x, in place: plain SGD's update with alpha = -lr."""
    if uses_onednn(dout_t, dout_t.shape[0], x.shape[1], x.shape[0], batch=x.shape[0]):
        return weight.add_(_onednn(dout_t, x.t()), alpha=alpha)
    # MKL accumulates into W within the product itself (beta = 1): the gradient is never written out.
    # At batch size 1 this is a rank-1 update on one thread, the thread whose addmv read W in the forward.
    # torch's addr_ can be faster alone, on two threads, but then the other core writes half of W and the
    # next addmv fetches that half back: the first layer's addmv then addr_ took 76-351 us on a 2-core
    # Zen 4, addmv then addmm_ 43-48 us (benchmarks/step_profile.py prints both).
    return weight.addmm_(dout_t, x, alpha=alpha)
