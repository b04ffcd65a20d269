"""Each hand-written module alone against autograd, plus init, loss reduction, stability, SGD, gradcheck
and the Module API."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import lightning_ref
from manual import (MLP, SGD, CrossEntropyLoss, Linear, NLLLoss, ReLU, Sigmoid, Softmax, Tanh)
from helpers import cmp

F64 = torch.float64
TIGHT = dict(rtol=1e-12, atol=1e-12)

# (batch, features) shapes; batch size 1 included on purpose.
SHAPES = [(1, 1), (1, 5), (2, 3), (7, 4), (33, 10)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, g, dtype=F64):
    return torch.randn(*shape, generator=g, dtype=dtype)


# ------------------------------------------------------------------------------------- each module alone

@pytest.mark.parametrize("n,d_in", SHAPES)
@pytest.mark.parametrize("d_out", [1, 6])
def test_linear_matches_autograd(n, d_in, d_out):
    g = _gen(100 * n + 10 * d_in + d_out)
    layer = Linear(d_in, d_out, dtype=F64, generator=g)
    bias = _randn(d_out, g=g)
    assert torch.all(bias != 0)
    layer.load_state_dict({"weight": layer.weight.clone(), "bias": bias})
    x = _randn(n, d_in, g=g)
    dout = _randn(n, d_out, g=g)

    out = layer(x)
    dx = layer.backward(dout)

    xr = x.clone().requires_grad_()
    w = layer.weight.clone().requires_grad_()
    b = bias.clone().requires_grad_()
    ref = F.linear(xr, w, b)
    rdx, rdw, rdb = torch.autograd.grad(ref, (xr, w, b), dout)
    cmp("out", out, ref.detach(), **TIGHT)
    cmp("dx", dx, rdx, **TIGHT)
    cmp("dW", layer.weight.grad, rdw, **TIGHT)
    cmp("db", layer.bias.grad, rdb, **TIGHT)
    # The first layer of a network skips dL/dx; its parameter gradients stay the same.
    w_grad, b_grad = layer.weight.grad.clone(), layer.bias.grad.clone()
    layer(x)
    assert layer.backward(dout, input_grad=False) is None
    cmp("dW (input_grad=False)", layer.weight.grad, w_grad, rtol=0.0, atol=0.0)
    cmp("db (input_grad=False)", layer.bias.grad, b_grad, rtol=0.0, atol=0.0)


ELEMENTWISE = [(Sigmoid, torch.sigmoid), (ReLU, torch.relu), (Tanh, torch.tanh)]


@pytest.mark.parametrize("cls,fn", ELEMENTWISE, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("n,d", SHAPES)
def test_activation_matches_autograd(cls, fn, n, d):
    g = _gen(7 * n + d)
    x = 3 * _randn(n, d, g=g)
    dout = _randn(n, d, g=g)
    mod = cls()
    out = mod(x)
    dx = mod.backward(dout)
    xr = x.clone().requires_grad_()
    ref = fn(xr)
    (rdx,) = torch.autograd.grad(ref, xr, dout)
    cmp(f"{cls.__name__} out", out, ref.detach(), **TIGHT)
    cmp(f"{cls.__name__} dx", dx, rdx, **TIGHT)


def test_relu_derivative_at_zero_is_zero():
    x = torch.tensor([[-1.0, 0.0, 2.0]], dtype=F64)
    mod = ReLU()
    mod(x)
    dx = mod.backward(torch.ones_like(x))
    xr = x.clone().requires_grad_()
    (rdx,) = torch.autograd.grad(torch.relu(xr), xr, torch.ones_like(x))
    cmp("relu dx at 0", dx, rdx, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("n,c", [(1, 2), (1, 5), (4, 3), (33, 10)])
def test_softmax_matches_autograd(n, c):
    g = _gen(n * 31 + c)
    x = 4 * _randn(n, c, g=g)
    dout = _randn(n, c, g=g)
    mod = Softmax()
    out = mod(x)
    dx = mod.backward(dout)
    xr = x.clone().requires_grad_()
    ref = F.softmax(xr, dim=1)
    (rdx,) = torch.autograd.grad(ref, xr, dout)
    cmp("softmax out", out, ref.detach(), **TIGHT)
    cmp("softmax dx", dx, rdx, **TIGHT)


@pytest.mark.parametrize("n,c", [(1, 2), (1, 5), (4, 3), (33, 10)])
@pytest.mark.parametrize("dloss", [1.0, 0.37])
def test_cross_entropy_matches_autograd(n, c, dloss):
    g = _gen(n * 17 + c)
    x = 4 * _randn(n, c, g=g)
    y = torch.randint(0, c, (n,), generator=g)
    crit = CrossEntropyLoss()
    loss = crit(x, y)
    dx = crit.backward(dloss) if dloss != 1.0 else crit.backward()
    xr = x.clone().requires_grad_()
    ref = F.cross_entropy(xr, y)
    (rdx,) = torch.autograd.grad(ref, xr, torch.tensor(dloss, dtype=F64))
    assert loss.dim() == 0
    cmp("ce loss", loss, ref.detach(), **TIGHT)
    cmp("ce dx", dx, rdx, **TIGHT)


@pytest.mark.parametrize("n,c", [(1, 2), (1, 5), (4, 3), (33, 10)])
def test_nll_matches_autograd(n, c):
    g = _gen(n * 13 + c)
    probs = F.softmax(2 * _randn(n, c, g=g), dim=1)
    y = torch.randint(0, c, (n,), generator=g)
    crit = NLLLoss()
    loss = crit(probs, y)
    dp = crit.backward()
    pr = probs.clone().requires_grad_()
    ref = F.nll_loss(pr.log(), y)
    (rdp,) = torch.autograd.grad(ref, pr)
    cmp("nll loss", loss, ref.detach(), **TIGHT)
    cmp("nll dprobs", dp, rdp, **TIGHT)


def test_cross_entropy_is_target_class_only_not_summed_over_classes():
    # Question 3's logits: ln 2, where the report's sum over classes printed 2 ln 2.
    logits = torch.full((1, 2), -0.8807970779778823, dtype=F64)
    loss = CrossEntropyLoss()(logits, torch.tensor([0]))
    assert abs(float(loss) - math.log(2)) < 1e-15, float(loss)
    probs = Softmax()(logits)
    assert abs(float(NLLLoss()(probs, torch.tensor([0]))) - math.log(2)) < 1e-15


# ------------------------------------------------------------------------------------------ init

def test_glorot_uniform_init_large_layer():
    fan_in, fan_out = 784, 300
    layer = Linear(fan_in, fan_out, dtype=F64, generator=_gen(0))
    w = layer.weight
    a = math.sqrt(6.0 / (fan_in + fan_out))
    assert w.shape == (fan_out, fan_in)
    assert float(w.abs().max()) < a, f"max |w| {float(w.abs().max())} >= a {a}"
    assert float(w.abs().max()) > 0.99 * a, "bound too small: wrong fan?"
    assert float(w.min()) < 0, "weights all positive (np.random.rand-style init)"
    assert float((w < 0).double().mean()) == pytest.approx(0.5, abs=0.01)
    n = w.numel()
    std = a / math.sqrt(3)
    assert abs(float(w.mean())) < 5 * std / math.sqrt(n), f"mean {float(w.mean())} not near 0"
    assert float(w.std()) == pytest.approx(std, rel=0.01), f"std {float(w.std())} vs a/sqrt(3) {std}"
    assert torch.all(layer.bias == 0), "biases must start at zero"


def test_glorot_uses_each_layers_own_fans():
    model = MLP([784, 300, 10], activation="sigmoid", dtype=F64, generator=_gen(1))
    for layer, (fi, fo) in zip(model.layers, [(784, 300), (300, 10)]):
        a = math.sqrt(6.0 / (fi + fo))
        m = float(layer.weight.abs().max())
        assert layer.weight.shape == (fo, fi)
        assert 0.99 * a < m < a, f"{layer}: max |w| {m}, expected just under {a}"
        assert float(layer.weight.min()) < 0
        assert torch.all(layer.bias == 0)


def test_init_uses_generator_reproducibly():
    a = Linear(20, 30, generator=_gen(5))
    b = Linear(20, 30, generator=_gen(5))
    c = Linear(20, 30, generator=_gen(6))
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)


def test_default_dtype_is_float32_and_dtype_respected():
    assert Linear(3, 4).weight.dtype == torch.float32
    lin = Linear(3, 4, dtype=F64)
    assert lin.weight.dtype == F64 and lin.bias.dtype == F64


# ------------------------------------------------------------------------------- bias gradient shape

@pytest.mark.parametrize("n", [1, 3, 8])
def test_bias_grad_has_one_entry_per_unit(n):
    g = _gen(n)
    layer = Linear(4, 5, dtype=F64, generator=g)
    dout = _randn(n, 5, g=g)
    layer(_randn(n, 4, g=g))
    layer.backward(dout)
    assert layer.bias.grad.shape == (5,), f"bias grad shape {tuple(layer.bias.grad.shape)}"
    cmp("db", layer.bias.grad, dout.sum(0), **TIGHT)
    assert layer.weight.grad.shape == layer.weight.shape


def test_mlp_bias_grads_shapes():
    model = MLP([6, 5, 4, 3], dtype=F64, generator=_gen(2))
    crit = CrossEntropyLoss()
    x = _randn(9, 6, g=_gen(3))
    y = torch.randint(0, 3, (9,), generator=_gen(4))
    crit(model(x), y)
    model.backward(crit.backward())
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.shape == p.shape, f"{name}: grad {tuple(p.grad.shape)} vs param {tuple(p.shape)}"


# --------------------------------------------------------------------------------- mean reduction

def _mlp_loss_and_grads(model, x, y):
    crit = CrossEntropyLoss()
    model.zero_grad()
    loss = crit(model(x), y)
    dlogits = crit.backward()
    model.backward(dlogits)
    return loss, dlogits, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("n", [1, 5])
def test_cross_entropy_is_mean_over_batch(n):
    g = _gen(40 + n)
    model = MLP([4, 6, 3], dtype=F64, generator=g)
    x = _randn(n, 4, g=g)
    y = torch.randint(0, 3, (n,), generator=g)
    loss1, dl1, g1 = _mlp_loss_and_grads(model, x, y)
    loss2, dl2, g2 = _mlp_loss_and_grads(model, torch.cat([x, x]), torch.cat([y, y]))
    cmp("loss (doubled batch)", loss2, loss1, **TIGHT)
    for name in g1:
        cmp(f"{name} (doubled batch)", g2[name], g1[name], **TIGHT)
    # dL/do per row scales with 1/N.
    cmp("dlogits (doubled batch)", dl2[:n], dl1 / 2, **TIGHT)
    cmp("dlogits (doubled batch, 2nd copy)", dl2[n:], dl1 / 2, **TIGHT)


def test_cross_entropy_gradient_rows_sum_to_zero_and_scale_one_over_n():
    g = _gen(9)
    x = _randn(6, 4, g=g)
    y = torch.randint(0, 4, (6,), generator=g)
    crit = CrossEntropyLoss()
    crit(x, y)
    d = crit.backward()
    cmp("row sums", d.sum(1), torch.zeros(6, dtype=F64), rtol=0, atol=1e-15)
    want = (F.softmax(x, 1) - F.one_hot(y, 4).to(F64)) / 6
    cmp("dL/do", d, want, **TIGHT)


# -------------------------------------------------------------------------------------- stability

def test_cross_entropy_float32_large_logits_stable():
    g = _gen(11)
    x = (torch.randn(8, 10, generator=g) * 1e4).float()
    x[0] = torch.tensor([1e4] + [-1e4] * 9)
    y = torch.randint(0, 10, (8,), generator=g)
    crit = CrossEntropyLoss()
    loss = crit(x, y)
    dx = crit.backward()
    xr = x.clone().requires_grad_()
    ref = F.cross_entropy(xr, y)
    (rdx,) = torch.autograd.grad(ref, xr)
    assert torch.isfinite(loss), f"loss {loss}"
    assert torch.isfinite(dx).all()
    assert loss.dtype == torch.float32 and dx.dtype == torch.float32
    cmp("ce loss f32 1e4", loss, ref.detach())
    cmp("ce dx f32 1e4", dx, rdx)


def test_softmax_float32_large_logits_stable():
    x = torch.tensor([[1e4, -1e4, 1e4 - 1.0], [-1e4, -1e4 + 2.0, -1e4]], dtype=torch.float32)
    y = Softmax()(x)
    assert torch.isfinite(y).all()
    cmp("softmax f32 1e4", y, F.softmax(x, dim=1))


# ------------------------------------------------------------------------------------------- fused

@pytest.mark.parametrize("n,c", [(1, 3), (5, 4), (20, 10)])
def test_fused_equals_softmax_then_nll(n, c):
    g = _gen(n + 100 * c)
    x = 2 * _randn(n, c, g=g)
    y = torch.randint(0, c, (n,), generator=g)
    ce = CrossEntropyLoss()
    loss_fused = ce(x, y)
    d_fused = ce.backward()
    sm, nll = Softmax(), NLLLoss()
    loss_chain = nll(sm(x), y)
    d_chain = sm.backward(nll.backward())
    cmp("loss fused vs chain", loss_fused, loss_chain, **TIGHT)
    cmp("dL/do fused vs chain", d_fused, d_chain, **TIGHT)


# --------------------------------------------------------------------------------------------- SGD

@pytest.mark.parametrize("lr,momentum,weight_decay", [
    (0.1, 0.0, 0.0), (0.1, 0.9, 0.0), (0.05, 0.0, 1e-2), (0.1, 0.9, 1e-4)])
def test_sgd_matches_torch_optim(lr, momentum, weight_decay):
    g = _gen(21)
    shapes = [(3, 4), (3,), (2, 3), (2,)]
    init = [_randn(*s, g=g) for s in shapes]
    mine = [t.clone() for t in init]
    ref = [t.clone().requires_grad_() for t in init]
    opt = SGD(mine, lr=lr, momentum=momentum, weight_decay=weight_decay)
    topt = torch.optim.SGD(ref, lr=lr, momentum=momentum, weight_decay=weight_decay)
    for step in range(6):
        grads = [_randn(*s, g=g) for s in shapes]
        for i, (p, r, gr) in enumerate(zip(mine, ref, grads)):
            # Leave one parameter without a gradient on one step: both optimisers skip it.
            skip = step == 3 and i == 1
            p.grad = None if skip else gr.clone()
            r.grad = None if skip else gr.clone()
        opt.step()
        topt.step()
        for i, (p, r) in enumerate(zip(mine, ref)):
            cmp(f"step {step} param {i}", p, r.detach(), rtol=1e-14, atol=1e-15)
    assert not any(p.requires_grad for p in mine)


def test_sgd_zero_grad_and_validation():
    p = torch.zeros(3)
    p.grad = torch.ones(3)
    opt = SGD([p], lr=0.1)
    opt.zero_grad()
    assert p.grad is None
    with pytest.raises(ValueError):
        SGD([], lr=0.1)
    with pytest.raises(ValueError):
        SGD([p], lr=0.0)
    with pytest.raises(ValueError):
        SGD([p], lr=0.1, momentum=-0.1)


def test_sgd_state_dict_roundtrip_continues_identically():
    g = _gen(22)
    init = [_randn(3, 2, g=g), _randn(3, g=g)]
    grads = [[_randn(3, 2, g=g), _randn(3, g=g)] for _ in range(4)]

    def run(split: bool):
        ps = [t.clone() for t in init]
        opt = SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3)
        for k, gs in enumerate(grads):
            if split and k == 2:
                state = opt.state_dict()
                opt = SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3)
                opt.load_state_dict(state)
            for p, gr in zip(ps, gs):
                p.grad = gr.clone()
            opt.step()
        return ps

    for a, b in zip(run(False), run(True)):
        cmp("resumed", a, b, rtol=0, atol=0)


# -------------------------------------------------------------------------------------- gradcheck

class ManualMLPLoss(torch.autograd.Function):
    """Forward: the manual MLP + CrossEntropyLoss with the given weights copied in; backward: the manual
    backward code. gradcheck compares it with finite differences."""

    @staticmethod
    def forward(ctx, x, y, sizes, activation, *weights):
        model = MLP(sizes, activation=activation, dtype=x.dtype)
        names = [n for n, _ in model.named_parameters()]
        model.load_state_dict({n: w.detach() for n, w in zip(names, weights)})
        crit = CrossEntropyLoss()
        loss = crit(model(x.detach()), y)
        ctx.model, ctx.crit = model, crit
        return loss.clone()

    @staticmethod
    def backward(ctx, gloss):
        dx = ctx.model.backward(ctx.crit.backward(gloss))
        grads = [p.grad.clone() for p in ctx.model.parameters()]
        return (dx.clone(), None, None, None, *grads)


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("sizes,n", [([3, 4, 2], 1), ([3, 4, 5, 3], 4)])
def test_gradcheck_manual_mlp(activation, sizes, n):
    g = _gen(len(sizes) * 10 + n)
    ref = MLP(sizes, activation=activation, dtype=F64, generator=g)
    weights = []
    for name, p in ref.named_parameters():
        w = p.clone()
        if name.endswith("bias"):
            w = 0.5 * _randn(*p.shape, g=g)
        weights.append(w.requires_grad_())
    x = _randn(n, sizes[0], g=g).requires_grad_()
    y = torch.randint(0, sizes[-1], (n,), generator=g)
    fn = lambda x_, *w: ManualMLPLoss.apply(x_, y, sizes, activation, *w)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, *weights), eps=1e-6, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------ Module API

def test_named_parameters_order_and_names_match_reference():
    sizes = [5, 4, 3, 2]
    model = MLP(sizes, activation="tanh", dtype=F64, generator=_gen(0))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                     "layers.2.weight", "layers.2.bias"]
    ref = lightning_ref.MLP(sizes, activation="tanh", dtype=F64)
    assert names == [n for n, _ in ref.named_parameters()]
    assert list(model.state_dict()) == list(ref.state_dict())
    params = model.parameters()
    assert len(params) == len(names)
    for p, (_, q) in zip(params, model.named_parameters()):
        assert p is q
    for (n, p), layer_idx in zip(model.named_parameters(), [0, 0, 1, 1, 2, 2]):
        layer = model.layers[layer_idx]
        assert p is (layer.weight if n.endswith("weight") else layer.bias)
    # Activations have no parameters.
    assert Sigmoid().parameters() == [] and Softmax().parameters() == []
    assert [n for n, _ in Linear(2, 3).named_parameters()] == ["weight", "bias"]


def test_zero_grad():
    model = MLP([3, 4, 2], dtype=F64, generator=_gen(0))
    crit = CrossEntropyLoss()
    crit(model(torch.ones(2, 3, dtype=F64)), torch.tensor([0, 1]))
    model.backward(crit.backward())
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_gradients_are_overwritten_not_accumulated():
    model = MLP([3, 4, 2], dtype=F64, generator=_gen(0))
    x, y = _randn(5, 3, g=_gen(1)), torch.tensor([0, 1, 1, 0, 1])
    _, _, g1 = _mlp_loss_and_grads(model, x, y)
    crit = CrossEntropyLoss()
    crit(model(x), y)
    model.backward(crit.backward())
    crit(model(x), y)
    model.backward(crit.backward())
    for n, p in model.named_parameters():
        cmp(f"{n} after two backwards", p.grad, g1[n], rtol=0, atol=0)


def test_state_dict_roundtrip_and_storage():
    a = MLP([3, 4, 2], dtype=F64, generator=_gen(0))
    b = MLP([3, 4, 2], dtype=F64, generator=_gen(1))
    sd = a.state_dict()
    assert list(sd) == [n for n, _ in a.named_parameters()]
    for n, p in a.named_parameters():
        assert sd[n].data_ptr() == p.data_ptr(), f"{n}: state_dict does not share storage"
    assert not torch.equal(a.layers[0].weight, b.layers[0].weight)
    b.load_state_dict(sd)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
        assert p.data_ptr() != q.data_ptr(), f"{n}: load_state_dict aliased the source"
    # A copy, not a reference: changing a afterwards leaves b alone.
    a.layers[0].weight.add_(1.0)
    assert not torch.equal(a.layers[0].weight, b.layers[0].weight)


def test_load_state_dict_strict_key_mismatch_raises():
    model = MLP([3, 4, 2], dtype=F64, generator=_gen(0))
    sd = dict(model.state_dict())
    missing = {k: v for k, v in sd.items() if k != "layers.1.bias"}
    with pytest.raises((KeyError, RuntimeError, ValueError)):
        model.load_state_dict(missing)
    extra = dict(sd, **{"layers.2.weight": torch.zeros(2, 2, dtype=F64)})
    with pytest.raises((KeyError, RuntimeError, ValueError)):
        model.load_state_dict(extra)
    before = model.layers[1].bias.clone()
    missing["layers.0.bias"] = torch.full((4,), 3.0, dtype=F64)
    model.load_state_dict(missing, strict=False)
    assert torch.all(model.layers[0].bias == 3.0)
    assert torch.equal(model.layers[1].bias, before)


def test_load_state_dict_shape_mismatch_raises():
    model = MLP([3, 4, 2], dtype=F64, generator=_gen(0))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["layers.0.weight"] = torch.zeros(3, 4, dtype=F64)   # transposed shape
    with pytest.raises((ValueError, RuntimeError)):
        model.load_state_dict(sd)
    with pytest.raises((ValueError, RuntimeError)):
        model.load_state_dict(sd, strict=False)
    # A shape that would silently broadcast in copy_ must be refused too.
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["layers.0.bias"] = torch.full((1,), 7.0, dtype=F64)
    before = model.layers[0].bias.clone()
    with pytest.raises((ValueError, RuntimeError)):
        model.load_state_dict(sd)
    assert torch.equal(model.layers[0].bias, before)


@pytest.mark.parametrize("mod", [Linear(2, 3), Sigmoid(), ReLU(), Tanh(), Softmax(), CrossEntropyLoss(),
                                 NLLLoss(), MLP([2, 3, 2])], ids=lambda m: type(m).__name__)
def test_backward_before_forward_raises(mod):
    with pytest.raises(RuntimeError):
        if isinstance(mod, (CrossEntropyLoss, NLLLoss)):
            mod.backward()
        else:
            mod.backward(torch.ones(1, 3 if isinstance(mod, Linear) else 2))


def test_module_to_dtype_keeps_names_and_grads():
    model = MLP([3, 4, 2], dtype=torch.float32, generator=_gen(0))
    crit = CrossEntropyLoss()
    crit(model(torch.ones(2, 3)), torch.tensor([0, 1]))
    model.backward(crit.backward())
    model.to(dtype=F64)
    for n, p in model.named_parameters():
        assert p.dtype == F64, n
        assert p.grad is not None and p.grad.dtype == F64, n
    assert [n for n, _ in model.named_parameters()] == list(model.state_dict())
    for n, p in model.named_parameters():   # the registry and the attribute agree after .to()
        assert model.state_dict()[n] is p
    with pytest.raises(RuntimeError):       # .to() drops the stale caches
        model.backward(torch.ones(2, 2, dtype=F64))
    out = model(torch.ones(2, 3, dtype=F64))
    assert out.dtype == F64
    model.backward(torch.ones(2, 2, dtype=F64))
    assert model.layers[0].weight.grad.dtype == F64
