"""Learners: ``REGISTRY[name](mac, env_info, cfg, device)``. Each learner class says with
``trains_on_agent_outputs`` whether its training batches must carry the acting policy's records
(``EpisodeBatch.agent_outputs`` and ``agent_hidden_in``; the run asks the train runner for them). A
learner class may define ``check_config(cfg)``, raising ``ValueError``; the config loader calls it, so a
run with settings the learner cannot use stops before anything is written."""
from .ippo_gail_learner import IPPOGAILLearner
from .ippo_learner import IPPOLearner
from .qmix_learner import QMIXLearner

REGISTRY = {
    "ippo": IPPOLearner,
    "ippo_gail": IPPOGAILLearner,
    "qmix": QMIXLearner,
}
