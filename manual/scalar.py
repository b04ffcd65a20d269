"""Question 3: a tiny network's forward and backward pass in plain Python (``math`` only).

Shape of the network (any sizes work; question 3 uses 2 -> 3 -> 2)::

    k_j = sum_i x_i W1[i][j] + b1[j]        hidden pre-activations
    h_j = sigmoid(k_j)                      hidden activations
    o_m = sum_j h_j W2[j][m] + b2[m]        logits
    y_m = softmax(o)_m                      class probabilities
    L   = -log y_c = logsumexp(o) - o_c     cross-entropy on the integer target c

``W1[i][j]`` joins input ``i`` to hidden unit ``j`` (``n_inputs x n_hidden``) and ``W2[j][m]``
joins hidden unit ``j`` to output ``m`` (``n_hidden x n_classes``), as drawn in the assignment.

Backward pass (derived in ``docs/derivations.md``)::

    dL/do_m     = y_m - [m == c]
    dW2[j][m]   = h_j dL/do_m               db2[m] = dL/do_m
    dL/dh_j     = sum_m W2[j][m] dL/do_m
    dL/dk_j     = dL/dh_j h_j (1 - h_j)
    dW1[i][j]   = x_i dL/dk_j               db1[j] = dL/dk_j

Run ``python -m manual.scalar`` (or ``python3 manual/scalar.py``) to print question 3's numbers.
This module must not import torch or numpy: the point of question 3 is that nothing but
arithmetic is needed.
"""

import math

__all__ = [
    "X",
    "TARGET",
    "W1",
    "B1",
    "W2",
    "B2",
    "sigmoid",
    "softmax",
    "logsumexp",
    "cross_entropy",
    "forward",
    "backward",
    "forward_backward",
    "main",
]

# Question 3's network, exactly as drawn in the assignment.
X = [1.0, -1.0]
TARGET = 0
W1 = [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]
B1 = [0.0, 0.0, 0.0]
W2 = [[1.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]]
B2 = [0.0, 0.0]


# --------------------------------------------------------------------------- validation


def _check_vector(name, v):
    """Return ``v`` as a list of floats, or raise ValueError naming ``name``."""
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
        raise ValueError(f"{name} must be a list of numbers, got {type(v).__name__}")
    if len(v) == 0:
        raise ValueError(f"{name} must not be empty")
    out = []
    for i, value in enumerate(v):
        # bool is an int subclass; True as a weight is almost certainly a mistake.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}[{i}] must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{name}[{i}] must be finite, got {value!r}")
        out.append(float(value))
    return out


def _check_matrix(name, m, n_rows, n_cols):
    """Check ``m`` is an ``n_rows x n_cols`` list of lists of numbers (not ragged)."""
    if isinstance(m, (str, bytes)) or not hasattr(m, "__len__"):
        raise ValueError(f"{name} must be a list of rows, got {type(m).__name__}")
    if len(m) != n_rows:
        raise ValueError(f"{name} must have {n_rows} rows, got {len(m)}")
    for i, row in enumerate(m):
        row = _check_vector(f"{name}[{i}]", row)
        if len(row) != n_cols:
            raise ValueError(
                f"{name} is ragged or the wrong width: row {i} has {len(row)} entries, "
                f"expected {n_cols}"
            )


def _check_network(x, W1, b1, W2, b2):
    """Validate shapes and return ``(n_inputs, n_hidden, n_classes)``."""
    n_in = len(_check_vector("x", x))
    if isinstance(W1, (str, bytes)) or not hasattr(W1, "__len__") or len(W1) == 0:
        raise ValueError("W1 must be a non-empty list of rows (one per input)")
    n_hidden = len(_check_vector("W1[0]", W1[0]))
    _check_matrix("W1", W1, n_in, n_hidden)
    if len(_check_vector("b1", b1)) != n_hidden:
        raise ValueError(f"b1 must have {n_hidden} entries (one per hidden unit), got {len(b1)}")
    if isinstance(W2, (str, bytes)) or not hasattr(W2, "__len__") or len(W2) == 0:
        raise ValueError("W2 must be a non-empty list of rows (one per hidden unit)")
    n_out = len(_check_vector("W2[0]", W2[0]))
    _check_matrix("W2", W2, n_hidden, n_out)
    if len(_check_vector("b2", b2)) != n_out:
        raise ValueError(f"b2 must have {n_out} entries (one per class), got {len(b2)}")
    return n_in, n_hidden, n_out


def _check_target(target, n_classes):
    """The target is a class index, not a one-hot vector or a float."""
    if isinstance(target, bool) or not isinstance(target, int):
        raise ValueError(f"target must be an int class index, got {type(target).__name__}")
    if not 0 <= target < n_classes:
        raise ValueError(f"target must be in range(0, {n_classes}), got {target}")


# --------------------------------------------------------------------------- building blocks


def sigmoid(z):
    """sigma(z) = 1 / (1 + e^{-z}); its derivative is sigma(z) (1 - sigma(z)).

    Only ever exponentiates a non-positive number, so a large ``|z|`` cannot overflow.
    """
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def logsumexp(o):
    """log sum_m e^{o_m}, computed as M + log sum_m e^{o_m - M} with M = max(o).

    The shift leaves the value unchanged (the e^M factor comes out of the log) but makes the
    largest exponent e^0 = 1: nothing overflows, and the sum is at least 1 so the log is finite.
    """
    m = max(o)
    return m + math.log(math.fsum(math.exp(v - m) for v in o))


def softmax(o):
    """y_m = e^{o_m} / sum_n e^{o_n}, computed as e^{o_m - M} / sum_n e^{o_n - M}, M = max(o).

    Softmax is unchanged by adding a constant to every logit; subtracting the max keeps every
    exponent <= 0, so no e^{o} overflows and the denominator is at least 1.
    """
    m = max(o)
    e = [math.exp(v - m) for v in o]
    total = math.fsum(e)
    return [v / total for v in e]


def cross_entropy(o, target):
    """L = -log softmax(o)_c = logsumexp(o) - o_c for the target class c.

    Only the target class contributes: the one-hot target zeroes every other term of
    -sum_m t_m log y_m. Working from the logits never forms log(y_c), which is -inf once
    y_c underflows to 0. The logits are shifted by their max first (logsumexp is
    shift-equivariant) so the subtraction does not cancel two large numbers.
    """
    m = max(o)
    shifted = [v - m for v in o]
    return logsumexp(shifted) - shifted[target]


# --------------------------------------------------------------------------- the network


def forward(x, W1, b1, W2, b2):
    """Forward pass. Returns a dict with ``k``, ``h``, ``o``, ``y`` (lists of floats).

    k_j = sum_i x_i W1[i][j] + b1[j],  h = sigmoid(k),
    o_m = sum_j h_j W2[j][m] + b2[m],  y = softmax(o).

    Raises ValueError if the shapes do not fit together.
    """
    n_in, n_hidden, n_out = _check_network(x, W1, b1, W2, b2)
    # fsum rounds each dot product once, so cancellations (like question 3's h - h) are exact
    # and the result does not depend on the order of the terms.
    k = [math.fsum([x[i] * W1[i][j] for i in range(n_in)] + [b1[j]]) for j in range(n_hidden)]
    h = [sigmoid(kj) for kj in k]
    o = [math.fsum([h[j] * W2[j][m] for j in range(n_hidden)] + [b2[m]]) for m in range(n_out)]
    y = softmax(o)
    return {"k": k, "h": h, "o": o, "y": y}


def backward(x, target, W2, cache):
    """Backward pass from the forward ``cache`` (``h`` and ``y``) to every gradient.

    dL/do_m   = y_m - [m == c]               (softmax and cross-entropy fused; see docs)
    dW2[j][m] = h_j dL/do_m,   db2 = dL/do
    dL/dh_j   = sum_m W2[j][m] dL/do_m       (each hidden unit feeds every logit)
    dL/dk_j   = dL/dh_j h_j (1 - h_j)        (sigmoid' written with the saved output)
    dW1[i][j] = x_i dL/dk_j,   db1 = dL/dk

    Returns a dict with ``dL_do``, ``dL_dh``, ``dL_dk``, ``dW1``, ``db1``, ``dW2``, ``db2``.
    """
    h, y = cache["h"], cache["y"]
    n_in, n_hidden, n_out = len(x), len(h), len(y)
    _check_target(target, n_out)

    # The fused form never divides by y_c, so it stays finite when y_c underflows to 0.
    dL_do = [y[m] - (1.0 if m == target else 0.0) for m in range(n_out)]
    dW2 = [[h[j] * dL_do[m] for m in range(n_out)] for j in range(n_hidden)]
    db2 = list(dL_do)

    dL_dh = [math.fsum(W2[j][m] * dL_do[m] for m in range(n_out)) for j in range(n_hidden)]
    dL_dk = [dL_dh[j] * h[j] * (1.0 - h[j]) for j in range(n_hidden)]
    dW1 = [[x[i] * dL_dk[j] for j in range(n_hidden)] for i in range(n_in)]
    db1 = list(dL_dk)

    return {
        "dL_do": dL_do,
        "dL_dh": dL_dh,
        "dL_dk": dL_dk,
        "dW1": dW1,
        "db1": db1,
        "dW2": dW2,
        "db2": db2,
    }


def forward_backward(x, target, W1, b1, W2, b2):
    """One forward pass to the loss and one backward pass.

    Returns a dict with ``loss`` (float), the gradients ``dW1``, ``db1``, ``dW2``, ``db2``
    (nested lists laid out like the parameters) and the intermediates ``k``, ``h``, ``o``,
    ``y``, ``dL_do``, ``dL_dh``, ``dL_dk``. Raises ValueError on ragged or mismatched
    inputs, or a target outside ``range(n_classes)``.
    """
    _, _, n_out = _check_network(x, W1, b1, W2, b2)
    _check_target(target, n_out)
    x = [float(v) for v in x]
    cache = forward(x, W1, b1, W2, b2)
    result = dict(cache)
    result["loss"] = cross_entropy(cache["o"], target)
    result.update(backward(x, target, W2, cache))
    return result


# --------------------------------------------------------------------------- report


def _fmt_matrix(name, m, indent="  "):
    lines = [f"{indent}{name} ="]
    lines += [f"{indent}  {row!r}" for row in m]
    return "\n".join(lines)


def main():
    """Print question 3's forward values, loss and every derivative at full precision."""
    r = forward_backward(X, TARGET, W1, B1, W2, B2)
    out = [
        "Question 3: one forward and one backward pass (plain Python, math only)",
        f"  x = {X!r}, target class c = {TARGET}",
        _fmt_matrix("W1 (W1[i][j]: input i -> hidden j)", W1),
        f"  b1 = {B1!r}",
        _fmt_matrix("W2 (W2[j][m]: hidden j -> output m)", W2),
        f"  b2 = {B2!r}",
        "",
        "Forward",
        f"  k = x W1 + b1         = {r['k']!r}",
        f"  h = sigmoid(k)        = {r['h']!r}",
        f"  o = h W2 + b2         = {r['o']!r}",
        f"  y = softmax(o)        = {r['y']!r}",
        f"  loss = logsumexp(o) - o[c] = {r['loss']!r}   (ln 2 = {math.log(2)!r})",
        "",
        "Backward",
        f"  dL/do = y - onehot(c)  = {r['dL_do']!r}",
        f"  dL/dh = W2 dL/do       = {r['dL_dh']!r}",
        f"  dL/dk = dL/dh h (1-h)  = {r['dL_dk']!r}",
        "",
        "Gradients",
        _fmt_matrix("dW2 (row j = hidden unit j)", r["dW2"]),
        f"  db2 = {r['db2']!r}",
        _fmt_matrix("dW1 (row i = input i)", r["dW1"]),
        f"  db1 = {r['db1']!r}",
        "",
        "dL/dh is 0: each hidden unit sends equal weights to both outputs, whose gradients are",
        "-0.5 and +0.5, so they cancel; dL/dk is then 0, and dW1 and db1 are exactly zero",
        "(-0.0 is IEEE negative zero from x[1] = -1 times 0.0; it equals 0.0).",
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
