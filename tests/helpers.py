"""Comparison helpers in the spirit of Karpathy's backprop-ninja ``cmp``."""
from __future__ import annotations

import torch


def _as_tensor(value, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    dtype = like.dtype if like is not None else torch.float64
    device = like.device if like is not None else None
    return torch.as_tensor(value, dtype=dtype, device=device)


def compare(name: str, manual, ref, rtol: float | None = None, atol: float | None = None) -> dict:
    """Return exact / allclose / max abs difference of ``manual`` against ``ref``.

    ``rtol``/``atol`` default to ``torch.testing.assert_close``'s defaults for the dtype.
    """
    ref_t = _as_tensor(ref)
    man_t = _as_tensor(manual, like=ref_t)
    info = {"name": name, "shape_ok": tuple(man_t.shape) == tuple(ref_t.shape),
            "dtype_ok": man_t.dtype == ref_t.dtype}
    if not info["shape_ok"]:
        info.update(exact=False, close=False, maxdiff=float("inf"))
        return info
    man_t = man_t.to(ref_t.device)
    kwargs = {}
    if rtol is not None or atol is not None:
        kwargs = {"rtol": 0.0 if rtol is None else rtol, "atol": 0.0 if atol is None else atol}
    try:
        torch.testing.assert_close(man_t, ref_t, check_dtype=False, **kwargs)
        close = True
    except AssertionError:
        close = False
    diff = (man_t.to(torch.float64) - ref_t.to(torch.float64)).abs()
    info.update(exact=bool(torch.equal(man_t.to(ref_t.dtype), ref_t)), close=close,
                maxdiff=float(diff.max()) if diff.numel() else 0.0)
    return info


def cmp(name: str, manual, ref, rtol: float | None = None, atol: float | None = None,
        check_dtype: bool = True) -> dict:
    """Assert ``manual`` equals ``ref`` within tolerance; the message carries the max abs difference.

    Prints one backprop-ninja style line (``name | exact | approximate | maxdiff``), visible with ``-s``.
    """
    info = compare(name, manual, ref, rtol=rtol, atol=atol)
    print(f"{name:20s} | exact: {str(info['exact']):5s} | approximate: {str(info['close']):5s} | "
          f"maxdiff: {info['maxdiff']:.3e}")
    man_shape = tuple(_as_tensor(manual).shape)
    ref_shape = tuple(_as_tensor(ref).shape)
    assert info["shape_ok"], f"{name}: shape {man_shape} != reference shape {ref_shape}"
    if check_dtype and isinstance(manual, torch.Tensor) and isinstance(ref, torch.Tensor):
        assert info["dtype_ok"], f"{name}: dtype {manual.dtype} != reference dtype {ref.dtype}"
    assert info["close"], (f"{name}: not close (rtol={rtol}, atol={atol}); "
                           f"max abs difference {info['maxdiff']:.3e}")
    return info


def cmp_exact(name: str, manual, ref) -> dict:
    """Bitwise equality, reporting the max abs difference when it fails."""
    info = compare(name, manual, ref)
    assert info["shape_ok"], f"{name}: shape mismatch"
    assert info["exact"], f"{name}: not bitwise equal; max abs difference {info['maxdiff']:.3e}"
    return info


def copy_weights(dst_model, src_model) -> None:
    """Load ``src_model.state_dict()`` into ``dst_model`` (manual or torch.nn), keys unchanged."""
    dst_model.load_state_dict({k: v.detach().clone() for k, v in src_model.state_dict().items()})
