"""A .npy written by numpy itself, to prove the reader against the real writer."""
import os

import numpy as np

from refutil import family_dir


def main():
    np.save(os.path.join(family_dir("npy"), "arange_2x3.npy"), (np.arange(6, dtype=np.float32) / 2).reshape(2, 3))
