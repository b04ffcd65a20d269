"""Hand-written backpropagation: every forward and backward pass is a formula on raw tensors.

No autograd anywhere: see ``docs/derivations.md`` for the derivations and ``tests/`` for the proof that the
results equal autograd's. ``manual.scalar`` is question 3's network in plain Python.
"""
from .nn import (ACTIVATIONS, CrossEntropyLoss, Linear, MLP, Module, NLLLoss, ReLU, Sigmoid, Softmax,
                 Tanh)
from .optim import SGD

__all__ = ["ACTIVATIONS", "CrossEntropyLoss", "Linear", "MLP", "Module", "NLLLoss", "ReLU", "SGD", "Sigmoid",
           "Softmax", "Tanh"]
