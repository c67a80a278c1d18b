#!/usr/bin/python3
"""Regenerates every reference file in tests/reference/data from PyTorch.

    /usr/bin/python3 tests/reference/make_reference.py          # all families
    /usr/bin/python3 tests/reference/make_reference.py conv2d   # ref_conv2d.py only

Needs Debian's python3-torch and python3-torchvision; CI never runs this, it reads the committed files.
"""
import glob
import importlib
import os
import sys

import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
torch.set_num_threads(1)
wanted = set(sys.argv[1:])
for path in sorted(glob.glob(os.path.join(here, "ref_*.py"))):
    name = os.path.basename(path)[4:-3]
    if wanted and name not in wanted:
        continue
    print(f"== {name}", flush=True)
    importlib.import_module("ref_" + name).main()
print("torch", torch.__version__)
