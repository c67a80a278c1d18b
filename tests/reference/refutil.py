"""Shared helpers for the reference scripts (ref_*.py). Run make_reference.py to regenerate everything.

Convention: inputs are drawn in float32 and saved as float32; outputs are computed by PyTorch in float64
from those same values and saved as float64. The C++ tests run fovea in float (compare against the float64
truth with a float tolerance) and in double (tight tolerance).
"""
import os

import numpy as np
import torch

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def family_dir(family):
    d = os.path.join(DATA, family)
    os.makedirs(d, exist_ok=True)
    return d


def save(family, name, t):
    """Saves a tensor (or array): float32 stays float32, everything else becomes float64."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    a = np.ascontiguousarray(t)
    a = a.astype(np.float32) if a.dtype == np.float32 else a.astype(np.float64)
    np.save(os.path.join(family_dir(family), name + ".npy"), a)


def randn(gen, *shape, scale=1.0):
    """float32-drawn values as a float64 tensor, so float64 reference math starts from what the test reads."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).double()


def generator(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g
