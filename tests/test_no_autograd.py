"""The manual network never needs autograd: it runs with gradients disabled and autograd's entry points
booby-trapped, and its source never mentions autograd machinery."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import manual
from manual import MLP, SGD, CrossEntropyLoss, NLLLoss, Softmax

ROOT = Path(__file__).resolve().parent.parent
MANUAL_FILES = sorted((ROOT / "manual").rglob("*.py"))


@pytest.fixture
def no_autograd(monkeypatch):
    """Make every way of asking autograd for a gradient raise."""
    def boom(*args, **kwargs):
        raise AssertionError("autograd was called by manual code")

    monkeypatch.setattr(torch.Tensor, "backward", boom)
    monkeypatch.setattr(torch.autograd, "grad", boom)
    monkeypatch.setattr(torch.autograd, "backward", boom)
    yield


def _no_grad_tensors(*tensors):
    for t in tensors:
        assert isinstance(t, torch.Tensor)
        assert not t.requires_grad, "a manual tensor requires grad"
        assert t.grad_fn is None, "a manual tensor has a grad_fn (an autograd graph was built)"


@pytest.mark.parametrize("grad_enabled", [False, True], ids=["grad-disabled", "grad-enabled"])
@pytest.mark.parametrize("activation", sorted(manual.ACTIVATIONS))
def test_mlp_train_step_without_autograd(no_autograd, activation, grad_enabled):
    g = torch.Generator().manual_seed(0)
    with torch.set_grad_enabled(grad_enabled):
        model = MLP([5, 7, 6, 3], activation=activation, dtype=torch.float64, generator=g)
        crit = CrossEntropyLoss()
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        x = torch.randn(4, 5, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (4,), generator=g)
        before = [p.clone() for p in model.parameters()]
        for _ in range(2):
            logits = model(x)
            # Also the forward method itself, not only __call__ (which wraps it in no_grad).
            logits2 = model.forward(x)
            loss = crit(logits, y)
            loss2 = crit.forward(logits2, y)
            dlogits = crit.backward()
            dx = model.backward(dlogits)
            opt.step()
            _no_grad_tensors(logits, logits2, loss, loss2, dlogits, dx)
        for p, b in zip(model.parameters(), before):
            _no_grad_tensors(p, p.grad)
            assert not torch.equal(p, b), "SGD did not update a parameter"
        for buf in opt.momentum_buffers:
            _no_grad_tensors(buf)


@pytest.mark.parametrize("grad_enabled", [False, True], ids=["grad-disabled", "grad-enabled"])
def test_softmax_nll_without_autograd(no_autograd, grad_enabled):
    g = torch.Generator().manual_seed(1)
    with torch.set_grad_enabled(grad_enabled):
        x = torch.randn(6, 4, generator=g, dtype=torch.float64)
        y = torch.randint(0, 4, (6,), generator=g)
        sm, nll = Softmax(), NLLLoss()
        probs = sm.forward(x)
        loss = nll.forward(probs, y)
        dp = nll.backward()
        dx = sm.backward(dp)
        _no_grad_tensors(probs, loss, dp, dx)


def test_booby_trap_works(no_autograd):
    """The fixture really does catch autograd use (so the tests above can fail)."""
    w = torch.ones(2, requires_grad=True)
    with pytest.raises(AssertionError, match="autograd was called"):
        (w * 2).sum().backward()
    with pytest.raises(AssertionError, match="autograd was called"):
        torch.autograd.grad((w * 2).sum(), w)


def test_parameters_do_not_require_grad():
    model = MLP([3, 4, 2])
    assert model.parameters()
    for name, p in model.named_parameters():
        assert not p.requires_grad, name


# ------------------------------------------------------------------------------------------ static check

FORBIDDEN_STRINGS = [
    "torch.autograd",
    "requires_grad_(",
    "requires_grad=True",
    "enable_grad",
    "import lightning",
    "from lightning",
    "pytorch_lightning",
    "functorch",
    "create_graph",
    "retain_graph",
    "grad_fn",
]
FORBIDDEN_PATTERNS = [re.compile(r"\btorch\.func\b(?!tional)")]
FORBIDDEN_IMPORTS = {"torch.autograd", "torch.func", "functorch", "lightning", "pytorch_lightning"}


def test_manual_has_python_files():
    names = {p.name for p in MANUAL_FILES}
    assert {"__init__.py", "nn.py", "optim.py", "scalar.py"} <= names


@pytest.mark.parametrize("path", MANUAL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_manual_source_mentions_no_autograd_machinery(path):
    text = path.read_text(encoding="utf-8")
    for s in FORBIDDEN_STRINGS:
        assert s not in text, f"{path.relative_to(ROOT)} mentions {s!r}"
    for pat in FORBIDDEN_PATTERNS:
        assert not pat.search(text), f"{path.relative_to(ROOT)} matches {pat.pattern!r}"
    tree = ast.parse(text, filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for m in mods:
            for bad in FORBIDDEN_IMPORTS:
                assert m != bad and not m.startswith(bad + "."), (
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {m}")
        # `from torch import autograd` / `from torch import func`
        if isinstance(node, ast.ImportFrom) and node.module == "torch":
            assert not {a.name for a in node.names} & {"autograd", "func"}, (
                f"{path.relative_to(ROOT)}:{node.lineno} imports torch.autograd/torch.func")


def test_static_check_catches_violations(tmp_path):
    """The forbidden list really flags the things it is meant to flag."""
    samples = ["w = torch.zeros(3, requires_grad=True)", "w.requires_grad_()",
               "g = torch.autograd.grad(l, w)", "from lightning import Trainer", "import lightning as L",
               "y = torch.func.grad(f)(x)"]
    for src in samples:
        hit = any(s in src for s in FORBIDDEN_STRINGS) or any(p.search(src) for p in FORBIDDEN_PATTERNS)
        assert hit, src
    assert not FORBIDDEN_PATTERNS[0].search("import torch.nn.functional as F")
