"""Demonstrations for DM², from training checkpoints: record, evaluate, select, build the ablation styles.

The Python API behind ``src/demos.py`` (see docs/demonstrations.md for the file format, the commands and
the four styles). Everything here runs on the CPU with the batched environment (``batch_size``
environments stepped per call) and the agents' own networks, rebuilt from each checkpoint's config.

* :func:`load_policy` reads the agent networks of a checkpoint (``results/models/<token>/<t_env>/``).
* :class:`Team`: slot ``i`` plays agent ``i`` of checkpoint ``c_i``; the team's stacked agent network
  is built from stack slice ``i`` of each ``c_i`` (one checkpoint for every slot = that run's own team).
* :func:`record_demonstrations` / :func:`build_demonstrations` record a dataset (one of the four
  :data:`~components.demonstrations.STYLES`), sampling ``stochastic`` (the policy's categorical
  distribution, as the reference code), ``greedy`` or ``epsilon`` (ε-greedy over the policy's argmax or
  QMIX's Q-values). The same seed (and batch size) gives the same dataset.
* :func:`evaluate_checkpoint`, :func:`evaluate_run` (greedy win rate of every checkpoint of a run, cached in
  a CSV), :func:`select_checkpoint` (the checkpoint nearest a target win rate).
* :func:`run_pipeline`: evaluate runs, select per target, write every possible style and a summary.

Nothing existing is ever overwritten: every output path is checked first and a clear
:class:`~components.demonstrations.DemonstrationError` names it.
"""
from __future__ import annotations

import csv
import datetime
import json
import math
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

import controllers
import envs
from components.demonstrations import (FORMAT, SAMPLING_MODES, STYLES, VERSION, DemonstrationError,
                                       Demonstrations, effective_obs_flags, save_demonstrations)
from config.loader import Config
from runners.episode_runner import EpisodeRunner
from utils.checkpoint import CHECKPOINT_FILE, CheckpointError, find_checkpoint, load_checkpoint

Progress = Callable[[str], None]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_EPISODES = 1000
DEFAULT_EVAL_EPISODES = 128
#: Environments stepped together while recording (and the episodes per runner call). Any value gives a
#: valid dataset; the same seed gives the same dataset only with the same batch size.
DEFAULT_BATCH_SIZE = 500
#: Config keys that decide the agent network and its inputs: a team's checkpoints must agree on them.
ARCHITECTURE_KEYS = ("mac", "agent", "hidden_dim", "obs_last_action", "obs_agent_id", "action_selector")
EVAL_COLUMNS = ("t_env", "win_rate", "mean_return", "mean_length", "episodes", "seed", "backend", "checkpoint",
                "seconds", "evaluated_at")
SUMMARY_FORMAT = "dm2-demonstrations-summary"


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """This checkout's commit (``+dirty`` when tracked files are modified), or None without git."""
    try:
        head = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def derive_seed(seed: int, *key: int) -> int:
    """A 32-bit seed that is a function of ``(seed, key)`` only (independent streams per key)."""
    return int(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)).generate_state(1)[0])


# ---- checkpoints and teams ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PolicyCheckpoint:
    """The agent networks of one training checkpoint (``learner["mac"]``), with its config and env info."""

    path: str  # absolute path of the checkpoint.pt file
    t_env: int
    config: dict
    env_info: dict
    agent_state: dict  # parameter name -> tensor with the stack dimension first ([N, ...], or [1, ...] if shared)

    @property
    def models_dir(self) -> str:
        """``results/models/<token>`` (the run's directory of step directories)."""
        return os.path.dirname(os.path.dirname(self.path))

    @property
    def run_name(self) -> str:
        return os.path.basename(self.models_dir)

    @property
    def map_name(self) -> str:
        return self.config["env_args"].get("map_name", self.config.get("env", "?"))

    @property
    def shared(self) -> bool:
        return bool(self.config.get("agent_parameter_sharing", False))

    def ref(self, agent: int) -> dict:
        """How metadata names "agent ``agent`` of this checkpoint"."""
        return {"checkpoint": self.path, "run": self.run_name, "t_env": self.t_env, "agent": int(agent),
                "learner": self.config.get("learner")}


def load_policy(path: str | PolicyCheckpoint, load_step: int = 0) -> PolicyCheckpoint:
    """The agent networks of a checkpoint: ``path`` is a ``checkpoint.pt`` file, a ``<t_env>`` step
    directory, or a models directory (then ``load_step`` picks the step as a resumed run does: 0 = latest)."""
    if isinstance(path, PolicyCheckpoint):
        return path
    file = os.path.abspath(find_checkpoint(os.fspath(path), load_step))
    ckpt = load_checkpoint(file)
    try:
        state = ckpt["learner"]["mac"]
        config, env_info, t_env = ckpt["config"], ckpt["env_info"], int(ckpt["loop"]["t_env"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"Checkpoint {file} has no agent networks (missing {exc}); expected a checkpoint "
                              "written by src/run.py with save_model=True.") from None
    return PolicyCheckpoint(path=file, t_env=t_env, config=config, env_info=env_info,
                            agent_state={k: v.detach().cpu() for k, v in state.items()})


def list_checkpoints(models_dir: str) -> dict[int, str]:
    """``{t_env: checkpoint file}`` of a run's models directory (``results/models/<token>``)."""
    if not os.path.isdir(models_dir):
        raise CheckpointError(f"{models_dir!r} is not a directory; expected a run's models directory "
                              f"results/models/<token>/ (written with save_model=True).")
    steps = {int(name): os.path.abspath(os.path.join(models_dir, name, CHECKPOINT_FILE))
             for name in os.listdir(models_dir)
             if name.isdigit() and os.path.isfile(os.path.join(models_dir, name, CHECKPOINT_FILE))}
    if not steps:
        raise CheckpointError(f"{models_dir!r} holds no <t_env>/{CHECKPOINT_FILE}; expected a run's models "
                              "directory results/models/<token>/ (written with save_model=True).")
    return dict(sorted(steps.items()))


def _team_mismatch(a: PolicyCheckpoint, i: int, b: PolicyCheckpoint, j: int, what: str) -> DemonstrationError:
    return DemonstrationError(
        f"Cannot form a team of slot {i} = {a.path} and slot {j} = {b.path}: {what}. All checkpoints of a mixed "
        "team must come from runs on the same map with the same agent network (agent, hidden_dim, inputs) "
        "and observation settings.")


class Team:
    """Slot ``i`` is played by agent ``i`` of ``members[i]`` (``len(members) == n_agents``).

    The team's agent network is the stacked network whose slice ``i`` is slice ``i`` of ``members[i]``'s
    (slice 0 when that checkpoint shares one network between agents; with the one-hot agent id input
    that network computes exactly what the shared one computed for agent ``i``).
    """

    def __init__(self, members: Sequence[PolicyCheckpoint]):
        members = list(members)
        if not members:
            raise DemonstrationError("A team needs at least one checkpoint.")
        first = members[0]
        n = int(first.env_info["n_agents"])
        if len(members) != n:
            raise DemonstrationError(f"A team on map {first.map_name!r} has {n} slots, but {len(members)} "
                                     "checkpoints were given (one per slot).")
        for j, m in enumerate(members[1:], start=1):
            if m.map_name != first.map_name:
                raise _team_mismatch(first, 0, m, j, f"map {first.map_name!r} vs {m.map_name!r}")
            for key in ("n_agents", "n_actions", "obs_shape"):
                if first.env_info[key] != m.env_info[key]:
                    raise _team_mismatch(first, 0, m, j, f"{key} {first.env_info[key]} vs {m.env_info[key]}")
            fa, fb = effective_obs_flags(first.config["env_args"]), effective_obs_flags(m.config["env_args"])
            for key in fa:
                if fa[key] != fb[key]:
                    raise _team_mismatch(first, 0, m, j, f"env_args.{key} {fa[key]} vs {fb[key]}")
            for key in ARCHITECTURE_KEYS:
                if first.config.get(key) != m.config.get(key):
                    raise _team_mismatch(first, 0, m, j, f"{key} {first.config.get(key)!r} vs {m.config.get(key)!r}")
            if set(first.agent_state) != set(m.agent_state):
                raise _team_mismatch(first, 0, m, j, "their agent networks have different parameters "
                                     f"({sorted(set(first.agent_state) ^ set(m.agent_state))})")
            for key, value in first.agent_state.items():
                if value.shape[1:] != m.agent_state[key].shape[1:]:
                    raise _team_mismatch(first, 0, m, j, f"parameter {key} has shape {tuple(value.shape[1:])} "
                                         f"vs {tuple(m.agent_state[key].shape[1:])} per agent")
        for m in members:
            expected = 1 if m.shared else n
            bad = [k for k, v in m.agent_state.items() if v.shape[0] != expected]
            if bad:
                raise DemonstrationError(f"Checkpoint {m.path}: parameter {bad[0]} has "
                                         f"{m.agent_state[bad[0]].shape[0]} stacks, expected {expected} "
                                         f"(agent_parameter_sharing={m.shared}, {n} agents).")
        self.members = members
        self.n_agents = n
        self.env_info = dict(first.env_info)
        self.env_args = dict(first.config["env_args"])
        self.map_name = first.map_name
        self.cfg = Config({**first.config, "agent_parameter_sharing": False})

    @classmethod
    def of(cls, checkpoint: str | PolicyCheckpoint) -> "Team":
        """A run's own team: every slot from the same checkpoint."""
        ckpt = load_policy(checkpoint)
        return cls([ckpt] * int(ckpt.env_info["n_agents"]))

    @property
    def single(self) -> bool:
        """True when every slot comes from the same checkpoint (a co-trained team)."""
        return len({m.path for m in self.members}) == 1

    def refs(self) -> list[dict]:
        return [m.ref(i) for i, m in enumerate(self.members)]

    def agent_state(self) -> dict[str, torch.Tensor]:
        """The team's stacked agent parameters: slice ``i`` from ``members[i]``."""
        return {key: torch.stack([m.agent_state[key][0 if m.shared else i] for i, m in enumerate(self.members)])
                for key in self.members[0].agent_state}

    def build_mac(self, device: torch.device | str = "cpu"):
        """The controller of the checkpoints' own config (unshared stacks), loaded with the team's weights."""
        device = torch.device(device)
        try:
            mac = controllers.REGISTRY[self.cfg.mac](self.env_info, self.cfg, device)
            mac.load_state_dict({k: v.to(device) for k, v in self.agent_state().items()})
        except (KeyError, AttributeError, RuntimeError, ValueError) as exc:
            raise DemonstrationError(f"Cannot rebuild the agent network of {self.members[0].path} from its config "
                                     f"({type(exc).__name__}: {exc}); was it written by another version of dm2?"
                                     ) from None
        return mac

    def make_env(self, n_envs: int, seed: int, backend: str | None = None):
        args = dict(self.env_args)
        if backend is not None:
            args["backend"] = backend
        return envs.REGISTRY[self.cfg.env](n_envs=n_envs, seed=seed, **args)


# ---- action sampling ------------------------------------------------------------------------------------------

class DemoSampler:
    """Replaces the controller's action selector while recording: ``stochastic`` samples the policy's
    categorical distribution over available actions (Gumbel-max, as ``CategoricalSelector``), ``greedy``
    takes the best available action, ``epsilon`` a uniformly random available action with probability
    ``epsilon`` and the best one otherwise. Its random numbers come from its own generator (seeded), so a
    recording does not depend on, or change, torch's global random state."""

    def __init__(self, mode: str, epsilon: float | None, seed: int, outputs_are_logits: bool,
                 device: torch.device | str = "cpu"):
        check_sampling(mode, epsilon, outputs_are_logits, "")
        self.mode, self.epsilon = mode, (float(epsilon) if mode == "epsilon" else None)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))

    def _rand(self, shape, device) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator, device=device)

    def select(self, outputs: torch.Tensor, avail: torch.Tensor, t_env: int, test_mode: bool) -> torch.Tensor:
        scores = outputs.masked_fill(~avail, -float("inf"))
        if self.mode == "stochastic":
            u = self._rand(scores.shape, scores.device).clamp_(min=1e-20)
            return (scores - torch.log(-torch.log(u))).argmax(-1)
        greedy = scores.argmax(-1)
        if self.mode == "greedy":
            return greedy
        random_actions = self._rand(avail.shape, avail.device).masked_fill_(~avail, -1.0).argmax(-1)
        explore = self._rand(greedy.shape, greedy.device) < self.epsilon
        return torch.where(explore, random_actions, greedy)


def check_sampling(mode: str, epsilon: float | None, outputs_are_logits: bool = True, where: str = "") -> None:
    """Raise :class:`DemonstrationError` for an unknown mode, a missing or out-of-range ``epsilon``, or
    ``stochastic`` sampling of Q-values (a checkpoint whose action selector is not ``categorical``)."""
    if mode not in SAMPLING_MODES:
        raise DemonstrationError(f"Unknown sampling mode {mode!r}; choose one of {', '.join(SAMPLING_MODES)}.")
    if mode == "epsilon":
        if epsilon is None or not 0.0 <= float(epsilon) <= 1.0:
            raise DemonstrationError(f"sampling 'epsilon' needs an epsilon in [0, 1] (e.g. --epsilon 0.05), got "
                                     f"{epsilon!r}.")
    elif epsilon is not None:
        raise DemonstrationError(f"epsilon={epsilon} is only used with sampling 'epsilon' (this is {mode!r}).")
    if mode == "stochastic" and not outputs_are_logits:
        raise DemonstrationError(f"{where}its agents output Q-values (action_selector epsilon_greedy, e.g. QMIX), "
                                 "which define no action distribution to sample; use sampling 'greedy' or "
                                 "'epsilon' (e.g. --sampling epsilon --epsilon 0.05).")


def _outputs_are_logits(team: Team) -> bool:
    return team.cfg.action_selector == "categorical"


# ---- rollouts -------------------------------------------------------------------------------------------------

@dataclass
class RolloutRecord:
    """What one rollout (a team playing ``n_episodes`` episodes) produced, per episode in recording order."""

    won: np.ndarray        # bool [n_episodes]
    lengths: np.ndarray    # int64 [n_episodes]
    returns: np.ndarray    # float64 [n_episodes]
    env_seed: int
    policy_seed: int
    batch_size: int
    backend: str
    seconds: float


def run_rollout(team: Team, n_episodes: int, sampling: str, epsilon: float | None, env_seed: int,
                policy_seed: int, batch_size: int = DEFAULT_BATCH_SIZE, keep: Sequence[np.ndarray | None] = (),
                out: Mapping[str, np.ndarray] | None = None, backend: str | None = None,
                device: torch.device | str = "cpu", progress: Progress | None = None,
                label: str = "rollout") -> RolloutRecord:
    """Play ``n_episodes`` episodes with ``team`` on ``min(batch_size, n_episodes)`` environments at a time
    (episode ``e`` = environment ``e % B`` in the ``e // B``-th runner call) and store, for every slot
    ``i`` with ``keep[i]`` given, the observations and actions of episodes ``keep[i]`` (rollout episode
    indices, in the order wanted) into ``out["obs"][i, k]``, ``out["actions"][i, k]``, ``out["lengths"][i, k]``,
    ``out["won"][i, k]`` (k = position in ``keep[i]``; ``out`` arrays padded to at least the episode limit).
    """
    if n_episodes < 1:
        raise DemonstrationError(f"The number of episodes must be positive, got {n_episodes}.")
    b = int(min(batch_size, n_episodes))
    device = torch.device(device)
    mac = team.build_mac(device)
    mac.selector = DemoSampler(sampling, epsilon, policy_seed, _outputs_are_logits(team), device)
    env = team.make_env(b, env_seed, backend)
    keep = list(keep) + [None] * (team.n_agents - len(keep))
    won = np.zeros(n_episodes, dtype=bool)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    returns = np.zeros(n_episodes, dtype=np.float64)
    start = time.time()
    n_calls = math.ceil(n_episodes / b)
    try:
        runner = EpisodeRunner(env, mac, team.cfg, device, n_episodes=b)  # real StarCraft II may hold fewer games
        for call in range(n_calls):
            batch, stats = runner.run(test_mode=False, t_env=0)
            lo, hi = call * b, min((call + 1) * b, n_episodes)
            used = hi - lo
            won[lo:hi] = np.asarray(stats["battle_won"][:used]).astype(bool)
            lengths[lo:hi] = stats["ep_length"][:used]
            returns[lo:hi] = stats["return"][:used]
            if out is not None:
                _store(batch, stats, lo, hi, keep, out)
            if progress is not None and (n_calls > 1 or time.time() - start > 2):
                elapsed = time.time() - start
                progress(f"  {label}: {hi}/{n_episodes} episodes, win rate so far {won[:hi].mean():.3f}, "
                         f"{elapsed:.1f} s ({hi / max(elapsed, 1e-9):.0f} episodes/s)")
        backend_name = getattr(env, "backend_name", "unknown")
    finally:
        env.close()
    return RolloutRecord(won=won, lengths=lengths, returns=returns, env_seed=int(env_seed),
                         policy_seed=int(policy_seed), batch_size=b, backend=backend_name,
                         seconds=time.time() - start)


def _store(batch, stats, lo: int, hi: int, keep: Sequence[np.ndarray | None], out: Mapping[str, np.ndarray]) -> None:
    t_max = batch.max_t
    obs = batch.obs[:, :t_max].cpu().numpy()          # [B, T, N, D]: the observations acted on
    actions = batch.actions.cpu().numpy()             # [B, T, N]
    ep_len = np.asarray(stats["ep_length"], dtype=np.int64)
    battle_won = np.asarray(stats["battle_won"]).astype(bool)
    for i, wanted in enumerate(keep):
        if wanted is None:
            continue
        pos = np.flatnonzero((wanted >= lo) & (wanted < hi))
        if not pos.size:
            continue
        src = wanted[pos] - lo
        lens = ep_len[src]
        valid = np.arange(t_max)[None, :] < lens[:, None]                       # [k, T]
        out["obs"][i, pos, :t_max] = np.where(valid[..., None], obs[src, :, i], 0.0)
        out["actions"][i, pos, :t_max] = np.where(valid, actions[src, :, i], 0)
        out["lengths"][i, pos] = lens
        out["won"][i, pos] = battle_won[src]


# ---- the four styles --------------------------------------------------------------------------------------------

@dataclass
class DemoPlan:
    """Which rollouts to play and which of their episodes each slot keeps.

    ``teams[r]`` plays ``rollout_episodes[r]`` episodes; slot ``i`` keeps episodes ``slot_episodes[i]`` of
    rollout ``slot_rollout[i]``."""

    style: str
    teams: list[Team]
    rollout_episodes: list[int]
    slot_rollout: list[int]
    slot_episodes: list[np.ndarray]
    n_episodes: int

    @property
    def n_agents(self) -> int:
        return self.teams[0].n_agents

    def slot_sources(self) -> list[PolicyCheckpoint]:
        """The checkpoint whose agent ``i`` each slot ``i`` imitates."""
        return [self.teams[self.slot_rollout[i]].members[i] for i in range(self.n_agents)]


def plan_style(style: str, checkpoints: Sequence[str | PolicyCheckpoint], n_episodes: int = DEFAULT_EPISODES
               ) -> DemoPlan:
    """The rollouts of a style (K = ``n_episodes``, N = n_agents):

    * ``dm2``: ``checkpoints = [team]``; one rollout of K episodes; slot i keeps episodes [0, K).
    * ``non_concurrent``: ``[team]``; one rollout of N·K episodes; slot i keeps [K·i, K·(i+1)).
    * ``concurrent_not_cotrained``: N checkpoints of independent runs; one rollout of the mixed team
      (slot i = agent i of ``checkpoints[i]``), K episodes; slot i keeps [0, K).
    * ``neither``: N checkpoints; rollout r = ``checkpoints[r]``'s own team, K episodes; slot i keeps
      episodes [0, K) of rollout i.
    """
    if style not in STYLES:
        raise DemonstrationError(f"Unknown demonstration style {style!r}; choose one of {', '.join(STYLES)}.")
    if not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
        raise DemonstrationError(f"The number of episodes per agent must be a positive integer, got {n_episodes!r}.")
    ckpts = [load_policy(c) for c in checkpoints]
    if not ckpts:
        raise DemonstrationError(f"Style {style!r} needs checkpoints; none were given.")
    n = int(ckpts[0].env_info["n_agents"])
    k = int(n_episodes)
    arange = np.arange(k, dtype=np.int64)
    if style in ("dm2", "non_concurrent"):
        if len(ckpts) != 1:
            raise DemonstrationError(f"Style {style!r} uses one co-trained team, i.e. one checkpoint; "
                                     f"{len(ckpts)} were given.")
        team = Team([ckpts[0]] * n)
        if style == "dm2":
            return DemoPlan(style, [team], [k], [0] * n, [arange.copy() for _ in range(n)], k)
        return DemoPlan(style, [team], [n * k], [0] * n, [k * i + arange for i in range(n)], k)
    if len(ckpts) < n:
        raise DemonstrationError(
            f"Style {style!r} needs {n} independently trained runs on {ckpts[0].map_name!r} (one per agent: "
            f"n_agents={n}), but {len(ckpts)} checkpoint(s) were given. Train more seeds of the same config.")
    if len(ckpts) > n:
        raise DemonstrationError(f"Style {style!r} takes exactly {n} checkpoints (one per agent), got {len(ckpts)}.")
    paths = [c.path for c in ckpts]
    dup = next((p for p in paths if paths.count(p) > 1), None)
    if dup is not None or len({c.models_dir for c in ckpts}) < n:
        raise DemonstrationError(f"Style {style!r} needs checkpoints of {n} different runs (independently trained "
                                 f"seeds); got {paths}.")
    if style == "concurrent_not_cotrained":
        return DemoPlan(style, [Team(ckpts)], [k], [0] * n, [arange.copy() for _ in range(n)], k)
    teams = [Team([c] * n) for c in ckpts]
    Team(ckpts)  # the slots must be compatible with each other (same map and network) as well
    return DemoPlan(style, teams, [k] * n, list(range(n)), [arange.copy() for _ in range(n)], k)


def recipe(plan: DemoPlan, sampling: str, epsilon: float | None, seed: int, batch_size: int,
           backend: str | None, target_win_rate: float | None) -> dict:
    """Everything that decides a dataset's content (stored as ``meta["recipe"]``; the pipeline reuses an
    existing file only when its recipe is this one)."""
    return {"style": plan.style, "n_episodes": plan.n_episodes, "sampling": sampling,
            "epsilon": None if epsilon is None else float(epsilon), "seed": int(seed), "batch_size": int(batch_size),
            "backend": backend, "target_win_rate": None if target_win_rate is None else float(target_win_rate),
            "teams": [[m.path for m in team.members] for team in plan.teams]}


def record_plan(plan: DemoPlan, sampling: str = "stochastic", epsilon: float | None = None, seed: int = 0, *,
                batch_size: int = DEFAULT_BATCH_SIZE, backend: str | None = None,
                target_win_rate: float | None = None, greedy_win_rates: Mapping[str, float] | None = None,
                device: torch.device | str = "cpu", progress: Progress | None = None) -> Demonstrations:
    """Play the plan's rollouts and assemble the dataset (rollout ``r`` uses env seed
    ``derive_seed(seed, 0, r)`` and policy seed ``derive_seed(seed, 1, r)``).

    ``greedy_win_rates`` maps checkpoint paths to their measured greedy win rate, for the metadata.
    """
    for team in plan.teams:
        check_sampling(sampling, epsilon, _outputs_are_logits(team), f"Checkpoint {team.members[0].path}: ")
    n, k = plan.n_agents, plan.n_episodes
    info = plan.teams[0].env_info
    limit, obs_dim = int(info["episode_limit"]), int(info["obs_shape"])
    out = {"obs": np.zeros((n, k, limit, obs_dim), np.float32), "actions": np.zeros((n, k, limit), np.int64),
           "lengths": np.zeros((n, k), np.int64), "won": np.zeros((n, k), bool)}
    records = []
    for r, (team, n_eps) in enumerate(zip(plan.teams, plan.rollout_episodes)):
        keep = [plan.slot_episodes[i] if plan.slot_rollout[i] == r else None for i in range(n)]
        who = ("team of " + team.members[0].path) if team.single else "mixed team " + ", ".join(
            m.path for m in team.members)
        _say(progress, f"rollout {r + 1}/{len(plan.teams)} ({plan.style}): {n_eps} episodes, {sampling} sampling, "
                       f"{who}")
        records.append(run_rollout(team, n_eps, sampling, epsilon, derive_seed(seed, 0, r), derive_seed(seed, 1, r),
                                   batch_size, keep, out, backend, device, progress, f"rollout {r + 1}"))
    t = int(out["lengths"].max())
    rollout_idx = np.array([[plan.slot_rollout[i]] * k for i in range(n)], dtype=np.int64).reshape(n, k)
    episode_idx = np.stack(plan.slot_episodes).astype(np.int64)
    greedy = dict(greedy_win_rates or {})
    sources = plan.slot_sources()
    slots = [{**src.ref(i), "greedy_win_rate": greedy.get(src.path)} for i, src in enumerate(sources)]
    first = plan.teams[0]
    meta = {
        "format": FORMAT, "version": VERSION, "map_name": first.map_name, "n_agents": n,
        "n_actions": int(info["n_actions"]), "obs_dim": obs_dim, "episode_limit": limit,
        "obs_flags": effective_obs_flags(first.env_args), "backend": records[0].backend, "style": plan.style,
        "n_episodes": k, "sampling": {"mode": sampling, "epsilon": None if epsilon is None else float(epsilon)},
        "seed": int(seed), "slots": slots,
        "rollouts": [{"team": team.refs(), "n_episodes": int(n_eps), "env_seed": rec.env_seed,
                      "policy_seed": rec.policy_seed, "batch_size": rec.batch_size, "backend": rec.backend,
                      "win_rate": float(rec.won.mean()), "mean_length": float(rec.lengths.mean()),
                      "mean_return": float(rec.returns.mean()), "seconds": round(rec.seconds, 3)}
                     for team, n_eps, rec in zip(plan.teams, plan.rollout_episodes, records)],
        "win_rate": {"recorded": float(out["won"].mean()),
                     "recorded_per_slot": [float(w) for w in out["won"].mean(axis=1)],
                     "greedy_eval": [s["greedy_win_rate"] for s in slots]},
        "target_win_rate": None if target_win_rate is None else float(target_win_rate),
        "created": _now(), "dm2_commit": git_commit(),
        "recipe": recipe(plan, sampling, epsilon, seed, batch_size, backend, target_win_rate),
        "software": {"numpy": np.__version__, "torch": torch.__version__},
    }
    return Demonstrations(obs=np.ascontiguousarray(out["obs"][:, :, :t]),
                          actions=np.ascontiguousarray(out["actions"][:, :, :t]), lengths=out["lengths"],
                          won=out["won"], meta=meta, rollout=rollout_idx, episode=episode_idx)


def build_demonstrations(style: str, checkpoints: Sequence[str | PolicyCheckpoint],
                         n_episodes: int = DEFAULT_EPISODES, sampling: str = "stochastic",
                         epsilon: float | None = None, seed: int = 0, *, batch_size: int = DEFAULT_BATCH_SIZE,
                         backend: str | None = None, target_win_rate: float | None = None,
                         greedy_win_rates: Mapping[str, float] | None = None, device: torch.device | str = "cpu",
                         out: str | None = None, progress: Progress | None = None) -> Demonstrations:
    """Record a dataset of ``style`` (see :func:`plan_style` for what ``checkpoints`` must be) and, with
    ``out``, save it there (refusing to overwrite; checked before recording)."""
    if out is not None and os.path.exists(out):
        raise DemonstrationError(f"{out} already exists; refusing to overwrite it. Choose another output path.")
    plan = plan_style(style, checkpoints, n_episodes)
    demos = record_plan(plan, sampling, epsilon, seed, batch_size=batch_size, backend=backend,
                        target_win_rate=target_win_rate, greedy_win_rates=greedy_win_rates, device=device,
                        progress=progress)
    if out is not None:
        save_demonstrations(out, demos)
        _say(progress, f"wrote {out}")
    return demos


def record_demonstrations(checkpoints: str | PolicyCheckpoint | Sequence[str | PolicyCheckpoint],
                          n_episodes: int = DEFAULT_EPISODES, sampling: str = "stochastic",
                          epsilon: float | None = None, seed: int = 0, **kwargs) -> Demonstrations:
    """Record ``n_episodes`` joint episodes: one checkpoint = that run's team (style ``dm2``); one
    checkpoint per agent = the mixed team (style ``concurrent_not_cotrained``). ``kwargs`` as
    :func:`build_demonstrations`."""
    if isinstance(checkpoints, (str, os.PathLike, PolicyCheckpoint)):
        checkpoints = [checkpoints]
    checkpoints = list(checkpoints)
    style = "dm2" if len(checkpoints) == 1 else "concurrent_not_cotrained"
    return build_demonstrations(style, checkpoints, n_episodes, sampling, epsilon, seed, **kwargs)


# ---- evaluation and selection -------------------------------------------------------------------------------------

@dataclass
class Evaluation:
    """The greedy evaluation of one checkpoint."""

    t_env: int
    win_rate: float
    mean_return: float
    mean_length: float
    episodes: int
    seed: int
    backend: str
    checkpoint: str
    seconds: float
    evaluated_at: str


def evaluate_checkpoint(checkpoint: str | PolicyCheckpoint, episodes: int = DEFAULT_EVAL_EPISODES, seed: int = 0,
                        *, backend: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                        device: torch.device | str = "cpu") -> Evaluation:
    """Greedy win rate of a checkpoint's team over ``episodes`` episodes (env seed ``derive_seed(seed, 2)``,
    the same for every checkpoint, so checkpoints are compared on the same battles' random draws)."""
    ckpt = load_policy(checkpoint)
    team = Team.of(ckpt)
    rec = run_rollout(team, episodes, "greedy", None, derive_seed(seed, 2), 0, batch_size, device=device,
                      backend=backend)
    return Evaluation(t_env=ckpt.t_env, win_rate=float(rec.won.mean()), mean_return=float(rec.returns.mean()),
                      mean_length=float(rec.lengths.mean()), episodes=int(episodes), seed=int(seed),
                      backend=rec.backend, checkpoint=ckpt.path, seconds=round(rec.seconds, 3), evaluated_at=_now())


def evaluation_cache_path(models_dir: str, cache_dir: str) -> str:
    return os.path.join(cache_dir, os.path.basename(os.path.normpath(models_dir)) + ".csv")


def _read_cache(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != EVAL_COLUMNS:
            raise DemonstrationError(f"Evaluation cache {path} has columns {reader.fieldnames}, expected "
                                     f"{list(EVAL_COLUMNS)}; it was not written by this code. Move it away or "
                                     "choose another --eval-dir.")
        return list(reader)


def _append_cache(path: str, row: Evaluation) -> None:
    new = not os.path.exists(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EVAL_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(asdict(row))
        f.flush()
        os.fsync(f.fileno())


def _resolved_backend(ckpt: PolicyCheckpoint, backend: str | None) -> str:
    """The backend a rollout of ``ckpt`` runs on: ``backend``, else the run's own (``auto`` resolved)."""
    chosen = backend if backend is not None else str(ckpt.config["env_args"].get("backend", "auto"))
    return envs.resolve_backend(chosen, ckpt.map_name) if chosen == "auto" else chosen


def evaluate_run(models_dir: str, episodes: int = DEFAULT_EVAL_EPISODES, seed: int = 0, *,
                 cache_dir: str | None = None, backend: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 device: torch.device | str = "cpu", progress: Progress | None = None) -> list[Evaluation]:
    """Greedy evaluation of every checkpoint of a run (sorted by t_env).

    With ``cache_dir`` the results are cached in ``<cache_dir>/<token>.csv`` (one row per evaluation, rows
    only ever appended): a checkpoint already evaluated with the same episodes, seed and backend is not
    evaluated again."""
    steps = list_checkpoints(models_dir)
    cache = evaluation_cache_path(models_dir, cache_dir) if cache_dir else None
    rows = _read_cache(cache) if cache else []
    if rows:  # the backend these evaluations run on (the run's own, unless overridden)
        backend_used = _resolved_backend(load_policy(next(iter(steps.values()))), backend)
    cached = {(row["checkpoint"], int(row["episodes"]), int(row["seed"]), row["backend"]): row for row in rows}
    results, start, done = [], time.time(), 0
    for idx, (t_env, path) in enumerate(steps.items()):
        row = cached.get((path, int(episodes), int(seed), backend_used)) if rows else None
        if row is not None:
            results.append(Evaluation(t_env=int(row["t_env"]), win_rate=float(row["win_rate"]),
                                      mean_return=float(row["mean_return"]), mean_length=float(row["mean_length"]),
                                      episodes=int(row["episodes"]), seed=int(row["seed"]), backend=row["backend"],
                                      checkpoint=row["checkpoint"], seconds=float(row["seconds"]),
                                      evaluated_at=row["evaluated_at"]))
            continue
        ev = evaluate_checkpoint(path, episodes, seed, backend=backend, batch_size=batch_size, device=device)
        done += 1
        if cache:
            _append_cache(cache, ev)
        results.append(ev)
        _say(progress, f"  evaluated {idx + 1}/{len(steps)}: t_env {t_env:,} win rate {ev.win_rate:.3f} "
                       f"({episodes} greedy episodes, {ev.seconds:.1f} s)")
    reused = len(steps) - done
    _say(progress, f"{os.path.basename(os.path.normpath(models_dir))}: {len(steps)} checkpoints, {done} evaluated "
                   f"in {time.time() - start:.1f} s, {reused} from the cache" + (f" {cache}" if cache else ""))
    return results


def select_checkpoint(evaluations: Sequence[Evaluation], target: float) -> Evaluation:
    """The evaluation whose win rate is nearest ``target`` (ties: the earliest t_env)."""
    if not evaluations:
        raise DemonstrationError("No evaluated checkpoints to select from.")
    if not 0.0 <= float(target) <= 1.0:
        raise DemonstrationError(f"A target win rate must be in [0, 1], got {target}.")
    return min(evaluations, key=lambda e: (abs(e.win_rate - float(target)), e.t_env))


def format_table(evaluations: Sequence[Evaluation], marks: Mapping[int, str] | None = None) -> str:
    """A text table t_env -> win rate (and the marks, e.g. ``{t_env: "<- target 0.3"}``)."""
    marks = marks or {}
    lines = [f"{'t_env':>12}  {'win rate':>8}  {'return':>7}  {'length':>6}"]
    for e in evaluations:
        lines.append(f"{e.t_env:>12,}  {e.win_rate:>8.3f}  {e.mean_return:>7.2f}  {e.mean_length:>6.1f}"
                     + (f"  {marks[e.t_env]}" if e.t_env in marks else ""))
    return "\n".join(lines)


# ---- pipeline -------------------------------------------------------------------------------------------------

def dataset_filename(style: str, target: float) -> str:
    return f"{style}_wr{float(target):g}.npz"


def _read_meta(path: str) -> dict | None:
    """The metadata of an existing dataset file (None if unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return json.loads(str(archive["meta"][()]))
    except Exception:  # noqa: BLE001 - anything unreadable is treated as "not ours"
        return None


def _same(a: Any, b: Any) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def run_pipeline(runs: Sequence[str], targets: Sequence[float], out_dir: str, *,
                 n_episodes: int = DEFAULT_EPISODES, eval_episodes: int = DEFAULT_EVAL_EPISODES, eval_seed: int = 0,
                 sampling: str = "stochastic", epsilon: float | None = None, seed: int = 0,
                 team_run: str | None = None, styles: Sequence[str] | None = None, eval_dir: str | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, backend: str | None = None,
                 device: torch.device | str = "cpu", progress: Progress | None = None) -> dict:
    """Evaluate every checkpoint of ``runs`` (cached in ``eval_dir``, default ``<out_dir>/evaluations``),
    select per run the checkpoint nearest each target, and write into ``out_dir`` for every target every
    style possible (``dm2`` and ``non_concurrent`` from ``team_run``, default ``runs[0]``; the other two
    from the first n_agents runs when at least n_agents runs are given), named
    ``<style>_wr<target>.npz``, plus ``summary.json`` and ``summary.md``.

    ``styles`` restricts the styles; naming one that needs more runs than given is an error. Re-running the
    same command does no work twice: evaluations come from the cache, and a dataset file that exists with the
    same recipe is kept. Any existing output with different content is an error, raised before recording.
    Returns the summary (as written to summary.json).
    """
    runs = [os.path.normpath(r) for r in runs]
    if not runs:
        raise DemonstrationError("The pipeline needs at least one run (--runs results/models/<token> ...).")
    if len(set(runs)) != len(runs):
        raise DemonstrationError(f"A run is listed twice in {runs}.")
    targets = [float(t) for t in targets]
    if not targets:
        raise DemonstrationError("Give at least one target win rate (e.g. --targets 0.3 0.5).")
    for t in targets:
        if not 0.0 <= t <= 1.0:
            raise DemonstrationError(f"A target win rate must be in [0, 1], got {t}.")
    if len({dataset_filename("x", t) for t in targets}) != len(targets):
        raise DemonstrationError(f"Targets {targets} repeat a value.")
    bad = [s for s in (styles or ()) if s not in STYLES]
    if bad:
        raise DemonstrationError(f"Unknown style(s) {bad}; choose from {', '.join(STYLES)}.")
    team_run = os.path.normpath(team_run) if team_run else runs[0]
    all_runs = runs + ([team_run] if team_run not in runs else [])
    eval_dir = eval_dir or os.path.join(out_dir, "evaluations")

    # Cheap checks first: every run is a models directory of one map with a compatible network.
    firsts = {r: load_policy(next(iter(list_checkpoints(r).values()))) for r in all_runs}
    ref = firsts[all_runs[0]]
    n = int(ref.env_info["n_agents"])
    for r, c in firsts.items():
        if c.map_name != ref.map_name:
            raise DemonstrationError(f"All runs must be on one map: {all_runs[0]} is on {ref.map_name!r} but {r} "
                                     f"on {c.map_name!r}.")
    if len(runs) >= n:
        Team([firsts[r] for r in runs[:n]])  # mixed teams must be possible (same network); raises otherwise
    wanted = list(styles) if styles else list(STYLES)
    skipped = []
    for style in ("concurrent_not_cotrained", "neither"):
        if style in wanted and len(runs) < n:
            reason = (f"needs {n} independently trained runs on {ref.map_name} (n_agents={n}), "
                      f"{len(runs)} given")
            if styles:
                raise DemonstrationError(f"Style {style!r} {reason}.")
            wanted.remove(style)
            skipped.append({"style": style, "reason": reason})
            _say(progress, f"skipping style {style}: {reason}")

    # Evaluate and select.
    tables = {}
    for idx, r in enumerate(all_runs):
        _say(progress, f"evaluating run {idx + 1}/{len(all_runs)}: {r}")
        tables[r] = evaluate_run(r, eval_episodes, eval_seed, cache_dir=eval_dir, backend=backend,
                                 batch_size=batch_size, device=device, progress=progress)
    chosen = {t: {r: select_checkpoint(tables[r], t) for r in all_runs} for t in targets}
    for r in all_runs:
        marks = {}
        for t in targets:
            marks[chosen[t][r].t_env] = marks.get(chosen[t][r].t_env, "<-") + f" target {t:g}"
        _say(progress, f"\n{r}\n{format_table(tables[r], marks)}")
    greedy = {e.checkpoint: e.win_rate for table in tables.values() for e in table}

    # Plan every dataset and check the outputs before recording anything.
    jobs = []
    for t in targets:
        for style in wanted:
            if style in ("dm2", "non_concurrent"):
                ckpts = [chosen[t][team_run].checkpoint]
            else:
                ckpts = [chosen[t][r].checkpoint for r in runs[:n]]
            plan = plan_style(style, ckpts, n_episodes)
            for team in plan.teams:
                check_sampling(sampling, epsilon, _outputs_are_logits(team), f"Checkpoint {team.members[0].path}: ")
            path = os.path.join(out_dir, dataset_filename(style, t))
            jobs.append((t, plan, path, recipe(plan, sampling, epsilon, seed, batch_size, backend, t)))
    summary_json, summary_md = os.path.join(out_dir, "summary.json"), os.path.join(out_dir, "summary.md")
    planned = [{"file": os.path.basename(p), "recipe": rc} for _, _, p, rc in jobs]
    if os.path.exists(summary_json):
        try:
            with open(summary_json) as f:
                old = json.load(f)
            same = _same([{"file": d["file"], "recipe": d["recipe"]} for d in old["datasets"]], planned)
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        if not same:
            raise DemonstrationError(f"{summary_json} already exists and lists other datasets than this command "
                                     f"would write; nothing is overwritten. Use a new --out-dir (evaluations can "
                                     f"be reused with --eval-dir {eval_dir}).")
    todo = []
    for t, plan, path, rc in jobs:
        if os.path.exists(path):
            meta = _read_meta(path)
            if meta is None or not _same(meta.get("recipe"), rc):
                raise DemonstrationError(f"{path} already exists but was not recorded with this command's settings "
                                         "(sources, episodes, sampling, seed); nothing is overwritten. Use a new "
                                         "--out-dir or move the file away.")
            _say(progress, f"{path} exists with the same recipe: kept")
        else:
            todo.append((t, plan, path, rc))

    # Record.
    for idx, (t, plan, path, rc) in enumerate(todo):
        _say(progress, f"dataset {idx + 1}/{len(todo)}: {path}")
        demos = record_plan(plan, sampling, epsilon, seed, batch_size=batch_size, backend=backend,
                            target_win_rate=t, greedy_win_rates=greedy, device=device, progress=progress)
        save_demonstrations(path, demos)
        _say(progress, f"wrote {path} (recorded win rate {demos.win_rate():.3f})")

    # Summary.
    datasets = []
    for t, plan, path, rc in jobs:
        meta = _read_meta(path)
        datasets.append({"file": os.path.basename(path), "style": plan.style, "target_win_rate": t,
                         "n_agents": plan.n_agents, "n_episodes": plan.n_episodes,
                         "sampling": meta["sampling"], "seed": meta["seed"],
                         "recorded_win_rate": meta["win_rate"]["recorded"],
                         "slots": [{k: s[k] for k in ("run", "t_env", "agent", "checkpoint", "greedy_win_rate")}
                                   for s in meta["slots"]],
                         "recipe": rc})
    summary = {
        "format": SUMMARY_FORMAT, "version": 1, "map_name": ref.map_name, "n_agents": n, "created": _now(),
        "dm2_commit": git_commit(), "targets": targets, "team_run": team_run, "runs": runs,
        "settings": {"n_episodes": n_episodes, "eval_episodes": eval_episodes, "eval_seed": eval_seed,
                     "sampling": sampling, "epsilon": epsilon, "seed": seed, "batch_size": batch_size,
                     "backend": backend},
        "evaluations": {r: {"csv": evaluation_cache_path(r, eval_dir),
                            "win_rate_by_t_env": {str(e.t_env): e.win_rate for e in tables[r]},
                            "selected": {f"{t:g}": {"t_env": chosen[t][r].t_env, "win_rate": chosen[t][r].win_rate,
                                                    "checkpoint": chosen[t][r].checkpoint} for t in targets}}
                        for r in all_runs},
        "datasets": datasets, "skipped": skipped,
    }
    if os.path.exists(summary_json):
        _say(progress, f"{summary_json} exists and lists the same datasets: kept")
        with open(summary_json) as f:
            return json.load(f)
    _write_new(summary_md, _summary_markdown(summary))
    _write_new(summary_json, json.dumps(summary, indent=2, sort_keys=False) + "\n")
    _say(progress, f"wrote {summary_json} and {summary_md}")
    return summary


def _write_new(path: str, text: str) -> None:
    """Write a text file that must not exist yet (temp file + link, as the datasets)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise DemonstrationError(f"{path} already exists; refusing to overwrite it.") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _summary_markdown(s: dict) -> str:
    lines = [f"# Demonstrations on {s['map_name']}", "",
             f"Created {s['created']} (dm2 commit {s['dm2_commit']}). {s['settings']['n_episodes']} episodes per "
             f"agent, {s['settings']['sampling']} sampling"
             + (f" (epsilon {s['settings']['epsilon']})" if s['settings']['epsilon'] is not None else "")
             + f", seed {s['settings']['seed']}. Greedy evaluation: {s['settings']['eval_episodes']} episodes per "
             f"checkpoint, seed {s['settings']['eval_seed']}.", "", "## Datasets", "",
             "| file | style | target | recorded win rate | sources (run @ t_env: greedy win rate) |",
             "|---|---|---|---|---|"]
    for d in s["datasets"]:
        seen, parts = set(), []
        for slot in d["slots"]:
            key = (slot["run"], slot["t_env"])
            if key not in seen:
                seen.add(key)
                parts.append(f"{slot['run']} @ {slot['t_env']}: {_fmt(slot['greedy_win_rate'])}")
        lines.append(f"| {d['file']} | {d['style']} | {d['target_win_rate']:g} | {d['recorded_win_rate']:.3f} | "
                     + "<br>".join(parts) + " |")
    for sk in s["skipped"]:
        lines.append(f"| — | {sk['style']} | — | — | skipped: {sk['reason']} |")
    lines += ["", "## Checkpoint evaluations (greedy win rate)", ""]
    for run, ev in s["evaluations"].items():
        sel = ", ".join(f"target {t}: t_env {v['t_env']} ({v['win_rate']:.3f})" for t, v in ev["selected"].items())
        lines += [f"### {run}", "", f"Selected: {sel}. Table: `{ev['csv']}`.", "", "| t_env | win rate |", "|---|---|"]
        lines += [f"| {t} | {w:.3f} |" for t, w in ev["win_rate_by_t_env"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"
