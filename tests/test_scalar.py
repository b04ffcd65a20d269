"""Question 3: the plain-Python network (``manual.scalar``) against the assignment's numbers, the tensor
network and autograd."""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import lightning_ref
import manual
from manual import scalar
from helpers import cmp

ROOT = Path(__file__).resolve().parent.parent

# NOTES.md, "Facts to reproduce exactly".
X = [1.0, -1.0]
TARGET = 0
W1 = [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]
B1 = [0.0, 0.0, 0.0]
W2 = [[1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]]
B2 = [0.0, 0.0]
SIG2 = 0.8807970779778823
LN2 = 0.6931471805599453
DW2_ROW = [-0.44039853898894116, 0.44039853898894116]
TOL = 1e-15


def _close(a: float, b: float, tol: float = TOL) -> bool:
    return abs(a - b) <= tol


def assert_nested_close(name, got, want, tol=TOL):
    g = torch.tensor(got, dtype=torch.float64)
    w = torch.tensor(want, dtype=torch.float64)
    cmp(name, g, w, rtol=0.0, atol=tol)


@pytest.fixture(scope="module")
def q3():
    return scalar.forward_backward(X, TARGET, W1, B1, W2, B2)


def test_module_constants_are_question_3():
    assert scalar.X == X and scalar.TARGET == TARGET
    assert scalar.W1 == W1 and scalar.B1 == B1 and scalar.W2 == W2 and scalar.B2 == B2


def test_question3_forward_values(q3):
    assert_nested_close("k", q3["k"], [2.0, 2.0, 2.0])
    assert_nested_close("h", q3["h"], [SIG2] * 3)
    assert_nested_close("o", q3["o"], [-SIG2, -SIG2])
    assert_nested_close("y", q3["y"], [0.5, 0.5])


def test_question3_loss_is_ln2(q3):
    assert _close(q3["loss"], LN2), f"loss {q3['loss']!r} != ln 2; diff {abs(q3['loss'] - LN2):.3e}"
    assert _close(q3["loss"], math.log(2))


def test_question3_loss_is_not_report_bug(q3):
    # The report summed -log y over every class: 2 ln 2 here.
    report_loss = -sum(math.log(v) for v in q3["y"])
    assert _close(report_loss, 2 * LN2, 1e-12)
    assert abs(q3["loss"] - report_loss) > 0.5, "loss sums -log over all classes (2 ln 2), not the target"


def test_question3_gradients(q3):
    assert_nested_close("dL/do", q3["dL_do"], [-0.5, 0.5])
    assert_nested_close("dW2", q3["dW2"], [DW2_ROW] * 3)
    assert_nested_close("db2", q3["db2"], [-0.5, 0.5])
    assert_nested_close("dL/dh", q3["dL_dh"], [0.0, 0.0, 0.0], tol=0.0)
    # Exactly zero (-0.0 == 0.0 is fine).
    assert all(v == 0.0 for row in q3["dW1"] for v in row), q3["dW1"]
    assert all(v == 0.0 for v in q3["db1"]), q3["db1"]
    assert len(q3["dW1"]) == 2 and all(len(r) == 3 for r in q3["dW1"])
    assert len(q3["dW2"]) == 3 and all(len(r) == 2 for r in q3["dW2"])


def _tensor_manual(x, target, W1_, b1, W2_, b2, dtype=torch.float64):
    """Run the tensor ``manual.MLP`` with question-3 layout weights (transposed into (out, in))."""
    n_in, n_hidden, n_out = len(W1_), len(W1_[0]), len(W2_[0])
    model = manual.MLP([n_in, n_hidden, n_out], activation="sigmoid", dtype=dtype)
    model.load_state_dict({
        "layers.0.weight": torch.tensor(W1_, dtype=dtype).t().contiguous(),
        "layers.0.bias": torch.tensor(b1, dtype=dtype),
        "layers.1.weight": torch.tensor(W2_, dtype=dtype).t().contiguous(),
        "layers.1.bias": torch.tensor(b2, dtype=dtype),
    })
    crit = manual.CrossEntropyLoss()
    xt = torch.tensor([x], dtype=dtype)
    yt = torch.tensor([target])
    loss = crit(model(xt), yt)
    dx = model.backward(crit.backward())
    grads = {n: p.grad for n, p in model.named_parameters()}
    return loss, dx, grads


def _autograd_ref(x, target, W1_, b1, W2_, b2, dtype=torch.float64):
    n_in, n_hidden, n_out = len(W1_), len(W1_[0]), len(W2_[0])
    model = lightning_ref.MLP([n_in, n_hidden, n_out], activation="sigmoid", dtype=dtype)
    model.load_state_dict({
        "layers.0.weight": torch.tensor(W1_, dtype=dtype).t(),
        "layers.0.bias": torch.tensor(b1, dtype=dtype),
        "layers.1.weight": torch.tensor(W2_, dtype=dtype).t(),
        "layers.1.bias": torch.tensor(b2, dtype=dtype),
    })
    xt = torch.tensor([x], dtype=dtype, requires_grad=True)
    loss = F.cross_entropy(model(xt), torch.tensor([target]))
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, [xt, *params.values()])
    return loss.detach(), grads[0], dict(zip(params, grads[1:]))


def _scalar_grads_in_weight_layout(r):
    return {
        "layers.0.weight": torch.tensor(r["dW1"], dtype=torch.float64).t(),
        "layers.0.bias": torch.tensor(r["db1"], dtype=torch.float64),
        "layers.1.weight": torch.tensor(r["dW2"], dtype=torch.float64).t(),
        "layers.1.bias": torch.tensor(r["db2"], dtype=torch.float64),
    }


def test_tensor_mlp_matches_question3(q3):
    loss, _, grads = _tensor_manual(X, TARGET, W1, B1, W2, B2)
    cmp("tensor loss", loss, torch.tensor(LN2, dtype=torch.float64), rtol=0.0, atol=TOL)
    want = _scalar_grads_in_weight_layout(q3)
    for name, g in grads.items():
        cmp(f"tensor {name}", g, want[name], rtol=0.0, atol=TOL)
    assert torch.all(grads["layers.0.weight"] == 0) and torch.all(grads["layers.0.bias"] == 0)


def test_autograd_matches_question3(q3):
    loss, _, grads = _autograd_ref(X, TARGET, W1, B1, W2, B2)
    cmp("autograd loss", loss, torch.tensor(LN2, dtype=torch.float64), rtol=0.0, atol=TOL)
    want = _scalar_grads_in_weight_layout(q3)
    for name, g in grads.items():
        cmp(f"autograd {name}", want[name], g, rtol=0.0, atol=TOL)


def test_cross_entropy_uses_only_target_class():
    # Uneven logits: -log y_c differs from both the all-class sum and from other classes' terms.
    o = [2.0, -1.0, 0.5]
    for c in range(3):
        want = -math.log(scalar.softmax(o)[c])
        got = scalar.cross_entropy(o, c)
        assert abs(got - want) < 1e-15, (c, got, want)
        assert abs(got + sum(math.log(v) for v in scalar.softmax(o))) > 0.1
        ref = float(F.cross_entropy(torch.tensor([o], dtype=torch.float64), torch.tensor([c])))
        assert abs(got - ref) < 1e-15, (c, got, ref)


def test_cross_entropy_and_softmax_are_stable():
    o = [1000.0, -1000.0, 999.0]
    y = scalar.softmax(o)
    assert all(math.isfinite(v) for v in y) and abs(sum(y) - 1.0) < 1e-15
    assert math.isfinite(scalar.cross_entropy(o, 1))
    assert abs(scalar.cross_entropy(o, 1) - 2000.0 - math.log1p(math.exp(-1.0))) < 1e-9
    assert scalar.sigmoid(-1000.0) == 0.0 and scalar.sigmoid(1000.0) == 1.0


@pytest.mark.parametrize("seed", range(12))
def test_random_scalar_network_matches_autograd(seed):
    rng = random.Random(seed)
    n_in, n_hidden, n_out = rng.randint(1, 6), rng.randint(1, 7), rng.randint(2, 6)
    target = rng.randrange(n_out)
    g = lambda: rng.uniform(-2.0, 2.0)  # noqa: E731
    x = [g() for _ in range(n_in)]
    W1_ = [[g() for _ in range(n_hidden)] for _ in range(n_in)]
    b1 = [g() for _ in range(n_hidden)]
    W2_ = [[g() for _ in range(n_out)] for _ in range(n_hidden)]
    b2 = [g() for _ in range(n_out)]

    r = scalar.forward_backward(x, target, W1_, b1, W2_, b2)
    loss, _, grads = _autograd_ref(x, target, W1_, b1, W2_, b2)
    cmp("loss", torch.tensor(r["loss"], dtype=torch.float64), loss, rtol=1e-13, atol=1e-14)
    want = _scalar_grads_in_weight_layout(r)
    for name, gr in grads.items():
        cmp(name, want[name], gr, rtol=1e-12, atol=1e-14)

    # The tensor network agrees too, and its dL/dx matches autograd's.
    tloss, tdx, tgrads = _tensor_manual(x, target, W1_, b1, W2_, b2)
    _, adx, _ = _autograd_ref(x, target, W1_, b1, W2_, b2)
    cmp("tensor loss", tloss, loss, rtol=1e-13, atol=1e-14)
    cmp("tensor dx", tdx, adx, rtol=1e-12, atol=1e-14)
    for name, gr in tgrads.items():
        cmp(f"tensor {name}", gr, grads[name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad", [
    dict(target=2),
    dict(target=-1),
    dict(target=1.0),
    dict(target=True),
    dict(W1=[[1.0, 1.0, 1.0], [-1.0, -1.0]]),
    dict(b1=[0.0, 0.0]),
    dict(W2=[[1.0, 1.0], [-1.0, -1.0]]),
    dict(b2=[0.0]),
    dict(x=[1.0]),
    dict(x=[1.0, float("nan")]),
])
def test_invalid_inputs_raise(bad):
    args = dict(x=X, target=TARGET, W1=W1, b1=B1, W2=W2, b2=B2)
    args.update(bad)
    with pytest.raises(ValueError):
        scalar.forward_backward(args["x"], args["target"], args["W1"], args["b1"], args["W2"], args["b2"])


def test_cli_prints_question3_numbers():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "manual.scalar"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "0.6931471805599453" in proc.stdout, proc.stdout
    assert "-0.44039853898894116" in proc.stdout, proc.stdout
    assert "0.44039853898894116" in proc.stdout
    assert "1.3862943611198906" not in proc.stdout, "prints 2 ln 2 (the report's loss bug)"
