"""manual/gemm.py: each product on either library agrees with float64, and whole-network parity holds on the
oneDNN path (the float32 parity tests elsewhere use shapes small enough to stay on torch.mm)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import manual
from manual import gemm
from mirror.cpu import cpu_info
from test_parity import run_parity

ROOT = Path(__file__).resolve().parent.parent
needs_onednn = pytest.mark.skipif(not gemm.onednn_available(), reason="oneDNN is not in this torch build")

# (N, D_in, D_out): batch size 1 (matrix-vector products, rank-1 updates), below the threshold, the first
# layer of a 784-300-10 step at batch 64 / 1024, and the last layer at batch 1024.
SHAPES = [(1, 784, 300), (1, 300, 10), (5, 7, 3), (64, 784, 300), (1024, 784, 300),
          (1024, 300, 10)]


def _data(n, d_in, d_out, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d_in, generator=g), torch.randn(d_out, d_in, generator=g),
            torch.randn(d_out, generator=g), torch.randn(n, d_out, generator=g))


def _close(name, got, want64):
    # float32 products of length K: a few ulps of the largest partial sums, relative to the result's scale.
    assert got.dtype == torch.float32
    err = (got.double() - want64).abs().max().item()
    scale = want64.abs().max().item()
    assert err <= 1e-5 * scale, f"{name}: max error {err:.3g} against scale {scale:.3g}"


@pytest.mark.parametrize("min_batch", [1, 10**9], ids=["onednn-from-batch-1", "mkl-only"])
@pytest.mark.parametrize("n,d_in,d_out", SHAPES, ids=str)
def test_products_match_float64(n, d_in, d_out, min_batch, monkeypatch):
    # Both routings on any machine: oneDNN wherever its thresholds allow, as on a Zen 5, and never.
    monkeypatch.setattr(gemm, "MIN_BATCH", min_batch)
    x, w, b, dout = _data(n, d_in, d_out)
    x64, w64, b64, dout64 = x.double(), w.double(), b.double(), dout.double()
    _close("affine", gemm.affine(x, w, b), x64 @ w64.T + b64)
    dout_t = dout.t().contiguous()   # as a layer hands it over: feature-major
    _close("input_grad", gemm.input_grad(dout_t, w), dout64 @ w64)
    out = torch.empty_like(w)
    assert gemm.weight_grad(dout_t, x, out=out) is out
    _close("weight_grad", out, dout64.T @ x64)
    w2 = w.clone()
    gemm.add_weight_grad_(w2, dout_t, x, alpha=-0.5)
    _close("add_weight_grad_", w2, w64 - 0.5 * dout64.T @ x64)


@needs_onednn
def test_threshold_routes_large_float32_cpu_products_only(monkeypatch):
    monkeypatch.setattr(gemm, "MIN_BATCH", 1)  # as on a Zen 5
    f32, f64 = torch.empty(0), torch.empty(0, dtype=torch.float64)
    assert gemm.uses_onednn(f32, 300, 1024, 784, batch=1024)    # the first layer's forward at batch 1024
    assert gemm.uses_onednn(f32, 300, 784, 64, batch=64)        # its weight gradient at batch 64
    assert not gemm.uses_onednn(f32, 300, 784, 16, batch=16)    # inner dimension too short
    assert not gemm.uses_onednn(f32, 300, 1, 784, batch=1)      # batch size 1: setup would cost more
    assert not gemm.uses_onednn(f64, 300, 1024, 784, batch=1024)  # oneDNN has no float64 gemm
    monkeypatch.setattr(gemm, "MIN_BATCH", 256)  # as on a Zen 4
    assert not gemm.uses_onednn(f32, 300, 784, 128, batch=128)
    assert gemm.uses_onednn(f32, 300, 256, 784, batch=256)


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu avx2

processor\t: 1
cpu family\t: 26
model\t\t: 2
model name\t: Another CPU
"""


def test_cpu_info_takes_the_first_processors_name_vendor_family_and_model(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    assert cpu_info(tmp_path / "cpuinfo") == {"cpu": "AMD EPYC", "cpu_vendor": "AuthenticAMD", "cpu_family": "25",
                                              "cpu_model": "17"}
    # No family line (an Arm host): the name alone. No file at all: platform's name for the processor.
    (tmp_path / "arm").write_text("processor\t: 0\nmodel name\t: Neoverse\n\nprocessor\t: 1\nmodel name\t: Other\n")
    assert cpu_info(tmp_path / "arm") == {"cpu": "Neoverse", "cpu_vendor": None, "cpu_family": None,
                                          "cpu_model": None}
    missing = cpu_info(tmp_path / "absent")
    assert missing["cpu_family"] is None and missing["cpu"]


def test_min_batch_leaves_small_batches_to_mkl_on_amd_family_25_only(tmp_path):
    (tmp_path / "zen4").write_text(CPUINFO)
    (tmp_path / "zen5").write_text(CPUINFO.replace("family\t: 25", "family\t: 26", 1))
    (tmp_path / "intel").write_text(CPUINFO.replace("AuthenticAMD", "GenuineIntel").replace(": 25", ": 6", 1))
    assert gemm.min_batch(cpu_info(tmp_path / "zen4")) == 256
    assert gemm.min_batch(cpu_info(tmp_path / "zen5")) == 1
    assert gemm.min_batch(cpu_info(tmp_path / "intel")) == 1
    assert gemm.min_batch(cpu_info(tmp_path / "absent")) == 1
    assert gemm.MIN_BATCH == gemm.min_batch(cpu_info())  # this machine's, as the module decided at import


@needs_onednn
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_network_parity_on_the_onednn_path(activation):
    # Every product of this step but the last layer's dL/dh goes to oneDNN.
    run_parity([784, 300, 10], activation, torch.float32, n=1024, seed=5)


@needs_onednn
def test_fused_sgd_equals_grad_then_step_on_the_onednn_path():
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(256, 784, generator=g), torch.randint(0, 10, (256,), generator=g)
    nets = [manual.MLP([784, 300, 10], generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    crit = manual.CrossEntropyLoss()
    crit(nets[0](x), y)
    nets[0].backward(crit.backward(), input_grad=False, sgd_lr=0.5)
    crit(nets[1](x), y)
    nets[1].backward(crit.backward(), input_grad=False)
    manual.SGD(nets[1].parameters(), lr=0.5).step()
    for (name, p), q in zip(nets[0].named_parameters(), nets[1].parameters()):
        torch.testing.assert_close(p, q, msg=lambda m, name=name: f"{name}: {m}")


def test_environment_switch_turns_onednn_off():
    code = "from manual import gemm; print(gemm.onednn_available())"
    env = {**os.environ, "MIRROR_ONEDNN": "0"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


@needs_onednn
def test_onednn_path_is_deterministic(monkeypatch):
    monkeypatch.setattr(gemm, "MIN_BATCH", 1)  # batch 64 on oneDNN, on a Zen 4 too
    # Same seed, same batches: bit-identical weights, as the README promises for two runs of one config.
    g = torch.Generator().manual_seed(4)
    batches = [(torch.rand(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)) for _ in range(20)]
    results = []
    for _ in range(2):
        net, crit = manual.MLP([784, 300, 10], generator=torch.Generator().manual_seed(0)), manual.CrossEntropyLoss()
        with torch.inference_mode():
            for x, y in batches:
                crit.forward(net.forward(x), y)
                net.backward(crit.backward(), input_grad=False, sgd_lr=0.5)
        results.append([p.clone() for p in net.parameters()])
    for a, b in zip(*results):
        assert torch.equal(a, b)
