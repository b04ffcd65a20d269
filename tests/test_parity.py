"""The whole manual MLP against its autograd twin ``lightning_ref.MLP`` on the same weights and batch."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lightning_ref
import manual
from helpers import cmp

ACTIVATIONS = ["sigmoid", "relu", "tanh"]
SIZES = {1: [7, 9, 5], 2: [7, 9, 8, 5], 3: [7, 9, 8, 6, 5]}
F64_TOL = dict(rtol=1e-12, atol=1e-12)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def run_parity(sizes, activation, dtype, n, device="cpu", seed=0, tol=None):
    """Manual forward/backward vs autograd; returns nothing, asserts everything."""
    tol = tol if tol is not None else (F64_TOL if dtype == torch.float64 else {})
    g = _gen(seed)
    man = manual.MLP(sizes, activation=activation, dtype=dtype, generator=g)
    # Random non-zero biases, so the bias path is exercised.
    with torch.no_grad():
        for layer in man.layers:
            layer.bias.copy_(0.3 * torch.randn(layer.bias.shape, generator=g, dtype=dtype))
    # A reference built from a different seed, then given the manual weights key for key.
    ref = lightning_ref.MLP(sizes, activation=activation, dtype=dtype, generator=_gen(seed + 1000))
    ref.load_state_dict(man.state_dict())
    man.to(device=device)
    ref.to(device=device)
    for (n1, p), (n2, q) in zip(man.named_parameters(), ref.named_parameters()):
        assert n1 == n2
        assert torch.equal(p, q.detach()), f"{n1}: weights differ after load_state_dict"

    x = torch.randn(n, sizes[0], generator=g, dtype=dtype).to(device)
    y = torch.randint(0, sizes[-1], (n,), generator=g).to(device)

    crit = manual.CrossEntropyLoss()
    logits = man(x)
    loss = crit(logits, y)
    dx = man.backward(crit.backward())

    xr = x.clone().requires_grad_()
    rlogits = ref(xr)
    rloss = F.cross_entropy(rlogits, y)
    params = dict(ref.named_parameters())
    rgrads = torch.autograd.grad(rloss, [xr, *params.values()])

    cmp("logits", logits, rlogits.detach(), **tol)
    cmp("loss", loss, rloss.detach(), **tol)
    cmp("dL/dx", dx, rgrads[0], **tol)
    for (name, p), rg in zip(man.named_parameters(), rgrads[1:]):
        assert p.grad is not None, f"{name}: no gradient"
        assert p.grad.device == rg.device
        cmp(f"d{name}", p.grad, rg, **tol)

    # Training skips dL/dx (input_grad=False): None comes back and every parameter gradient is unchanged.
    first = {name: p.grad.clone() for name, p in man.named_parameters()}
    crit(man(x), y)
    assert man.backward(crit.backward(), input_grad=False) is None
    for name, p in man.named_parameters():
        cmp(f"d{name} (input_grad=False)", p.grad, first[name], rtol=0.0, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_parity(activation, depth, dtype):
    run_parity(SIZES[depth], activation, dtype, n=16, seed=depth)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_parity_batch_size_1(activation, dtype):
    run_parity(SIZES[2], activation, dtype, n=1, seed=7)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_parity_mnist_shape(activation):
    run_parity([784, 300, 10], activation, torch.float64, n=8, seed=3)


def test_parity_no_hidden_layer():
    run_parity([6, 4], "sigmoid", torch.float64, n=5, seed=4)


def test_state_dict_round_trip_reference_to_manual():
    sizes = SIZES[2]
    ref = lightning_ref.MLP(sizes, "tanh", dtype=torch.float64, generator=_gen(1))
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=_gen(2), dtype=p.dtype))
    man = manual.MLP(sizes, "tanh", dtype=torch.float64, generator=_gen(3))
    man.load_state_dict(ref.state_dict())
    for (n1, p), (n2, q) in zip(man.named_parameters(), ref.named_parameters()):
        assert n1 == n2
        assert torch.equal(p, q.detach()), n1
    back = lightning_ref.MLP(sizes, "tanh", dtype=torch.float64, generator=_gen(4))
    back.load_state_dict(man.state_dict())
    for (n, p), (_, q) in zip(back.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("sizes", [[7, 9, 8, 5], [784, 300, 10], [2, 3, 2]], ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_same_seed_same_initial_weights(activation, sizes, dtype):
    for seed in (0, 123):
        man = manual.MLP(sizes, activation=activation, dtype=dtype, generator=_gen(seed))
        ref = lightning_ref.MLP(sizes, activation=activation, dtype=dtype, generator=_gen(seed))
        for (n1, p), (n2, q) in zip(man.named_parameters(), ref.named_parameters(), strict=True):
            assert n1 == n2
            assert p.dtype == q.dtype == dtype
            assert torch.equal(p, q.detach()), f"seed {seed}, {n1}: initial weights differ"
    other = manual.MLP(sizes, activation=activation, dtype=dtype, generator=_gen(1))
    assert not torch.equal(other.layers[0].weight, man.layers[0].weight)


def test_classifier_seed_gives_manual_initial_weights():
    clf = lightning_ref.MLPClassifier([7, 9, 5], "relu", lr=0.1, seed=11, dtype="float64")
    man = manual.MLP([7, 9, 5], activation="relu", dtype=torch.float64, generator=_gen(11))
    for (n1, p), (n2, q) in zip(man.named_parameters(), clf.model.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p, q.detach()), n1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_parity_cuda(activation, dtype):
    # float32 on GPU may use TF32 matmuls if a caller enabled them; compare in full precision.
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        run_parity(SIZES[2], activation, dtype, n=16, device="cuda", seed=5)
        run_parity([784, 300, 10], activation, dtype, n=1, device="cuda", seed=6)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
