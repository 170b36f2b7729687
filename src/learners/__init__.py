"""Learners: ``REGISTRY[name](mac, env_info, cfg, device)``. Each learner class says with
``trains_on_agent_outputs`` whether its training batches must carry the acting policy's records
(``EpisodeBatch.agent_outputs`` and ``agent_hidden_in``; the run asks the train runner for them)."""
from .ippo_learner import IPPOLearner
from .qmix_learner import QMIXLearner

REGISTRY = {
    "ippo": IPPOLearner,
    "qmix": QMIXLearner,
}
