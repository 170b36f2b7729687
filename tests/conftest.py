"""Test setup: the code lives in ``src/`` and is imported PyMARL-style (``from envs import ...``)."""
import os
import sys

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

# Tests use small networks: one torch thread is fastest and keeps timings stable on a loaded machine.
import torch  # noqa: E402

torch.set_num_threads(1)
