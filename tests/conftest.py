"""Test setup: the code lives in ``src/`` and is imported PyMARL-style (``from envs import ...``)."""
import os
import sys

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
