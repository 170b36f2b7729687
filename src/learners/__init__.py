"""Learners: ``REGISTRY[name](mac, env_info, cfg, device)``."""
from .ippo_learner import IPPOLearner
from .qmix_learner import QMIXLearner

REGISTRY = {
    "ippo": IPPOLearner,
    "qmix": QMIXLearner,
}
