"""``BatchedStarCraft2Sim``: B independent SMAC battles stepped per call on arrays."""
from __future__ import annotations

import difflib
import os
import time
from typing import Any

import numpy as np

from ..multiagentenv import BatchedMultiAgentEnv
from . import engine
from .features import FeatureLayout, build_avail_actions, build_obs, build_state, find_invalid_actions
from .heuristic import SmacHeuristic
from .maps import ALLY_SPAWN, ENEMY_SPAWN, MAP_SIZE, get_scenario
from .units import UNIT_TYPES, air_heal_arrays, unit_arrays

#: SMAC's ``StarCraft2Env`` keyword arguments and defaults. All are accepted; the ones listed in
#: ``_UNSUPPORTED`` are rejected when set to anything but their default.
SMAC_DEFAULTS: dict[str, Any] = dict(
    map_name="8m", step_mul=8, move_amount=2, difficulty="7", game_version=None, seed=None,
    continuing_episode=False, obs_all_health=True, obs_own_health=True, obs_last_action=False,
    obs_pathing_grid=False, obs_terrain_height=False, obs_instead_of_state=False,
    obs_timestep_number=False, state_last_action=True, state_timestep_number=False,
    reward_sparse=False, reward_only_positive=True, reward_death_value=10, reward_win=200,
    reward_defeat=0, reward_negative_scale=0.5, reward_scale=True, reward_scale_rate=20,
    replay_dir="", replay_prefix="", window_size_x=1920, window_size_y=1200, heuristic_ai=False,
    heuristic_rest=False, debug=False,
)
_UNSUPPORTED = {
    "obs_terrain_height": "the embedded simulator's arenas have pathability but no terrain heights",
    "game_version": "it selects a StarCraft II binary; the embedded simulator has none",
}
_DIFFICULTIES = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "A")
#: Batch sizes from which stepping is spread over all cores. Below, one core is faster: measured on 2 idle
#: cores (5m_vs_6m, µs per env step, serial / parallel): B=64 5.4 / 7.2, B=128 8.1 / 5.1, B=1024 5.5 / 4.2.
PARALLEL_FROM = 128


def check_smac_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """SMAC's constructor arguments with defaults filled in; unknown or unsupported ones are errors."""
    unknown = sorted(set(kwargs) - set(SMAC_DEFAULTS))
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, SMAC_DEFAULTS, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(f"Unknown StarCraft2Env argument(s): {', '.join(hints)}. "
                        f"Valid arguments: {', '.join(sorted(SMAC_DEFAULTS))}.")
    args = {**SMAC_DEFAULTS, **kwargs}
    for key, why in _UNSUPPORTED.items():
        if args[key] != SMAC_DEFAULTS[key]:
            raise ValueError(f"{key}={args[key]!r} is not supported: {why}. Leave it at "
                             f"{SMAC_DEFAULTS[key]!r}, or use backend=starcraft2 with the real game.")
    if str(args["difficulty"]) not in _DIFFICULTIES:
        raise ValueError(f"difficulty={args['difficulty']!r} is not one of SMAC's levels "
                         f"{', '.join(_DIFFICULTIES)}.")
    if not isinstance(args["step_mul"], (int, np.integer)) or args["step_mul"] < 1:
        raise ValueError(f"step_mul must be a positive integer (game loops per step), got {args['step_mul']!r}.")
    if not isinstance(args["move_amount"], (int, np.integer)) or args["move_amount"] < 1:
        raise ValueError(f"move_amount must be a positive integer (cells per move order), got {args['move_amount']!r}.")
    for key in ("heuristic_ai", "heuristic_rest"):
        if not isinstance(args[key], (bool, np.bool_)):
            raise ValueError(f"{key} must be True or False, got {args[key]!r}.")
    if args["heuristic_rest"] and not args["heuristic_ai"]:
        raise ValueError("heuristic_rest=True only restricts SMAC's heuristic agents (SMAC ignores it "
                         "without them); set heuristic_ai=True as well, or leave heuristic_rest False.")
    if args["obs_all_health"]:
        args["obs_own_health"] = True  # as in SMAC
    return args


def _derive_env_seeds(seed: int | None, n_envs: int) -> np.ndarray:
    """One 64-bit seed per environment, a function of (seed, env index) only."""
    root = np.random.SeedSequence(seed)
    return np.array([np.random.SeedSequence(root.entropy, spawn_key=(b,)).generate_state(1, np.uint64)[0]
                     for b in range(n_envs)], dtype=np.uint64)


class BatchedStarCraft2Sim(BatchedMultiAgentEnv):
    """``n_envs`` independent SMAC battles on the embedded simulator.

    Accepts SMAC's ``StarCraft2Env`` keyword arguments (``map_name``, ``step_mul``, ``move_amount``, the
    ``obs_*``/``state_*``/``reward_*`` flags, ``continuing_episode``, ``heuristic_ai`` / ``heuristic_rest``
    (SMAC's scripted agents, ``heuristic.py``), ``seed``, ``replay_dir``, ...), plus
    ``n_envs`` and ``record_replay`` (keep every environment's last episode for ``save_replay``).
    See ``BatchedMultiAgentEnv`` for the array API; values follow SMAC's semantics exactly.
    """

    backend_name = "sim"

    def __init__(self, map_name: str = "8m", n_envs: int = 1, seed: int | None = None,
                 record_replay: bool = False, **smac_kwargs):
        if not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}.")
        args = check_smac_kwargs({**smac_kwargs, "map_name": map_name, "seed": seed})
        self.args = args
        self.scenario = sc = get_scenario(map_name)
        self.map_name = map_name
        self.n_envs = int(n_envs)
        self.n_agents = sc.n_agents
        self.n_enemies = sc.n_enemies
        self.n_actions = 6 + sc.n_enemies
        self.episode_limit = sc.episode_limit
        self.step_mul = int(args["step_mul"])
        self.move_amount = int(args["move_amount"])
        self.continuing_episode = bool(args["continuing_episode"])
        self.layout = FeatureLayout(
            n_agents=sc.n_agents, n_enemies=sc.n_enemies, n_actions=self.n_actions,
            unit_type_bits=sc.unit_type_bits, shield_bits_ally=int(sc.a_race == "P"),
            shield_bits_enemy=int(sc.b_race == "P"), obs_all_health=bool(args["obs_all_health"]),
            obs_own_health=bool(args["obs_own_health"]), obs_last_action=bool(args["obs_last_action"]),
            obs_pathing_grid=bool(args["obs_pathing_grid"]),
            obs_instead_of_state=bool(args["obs_instead_of_state"]),
            obs_timestep_number=bool(args["obs_timestep_number"]),
            state_last_action=bool(args["state_last_action"]),
            state_timestep_number=bool(args["state_timestep_number"]))
        self.ally_unit_names = sc.ally_unit_names()
        self.enemy_unit_names = sc.enemy_unit_names()
        units = [UNIT_TYPES[n] for n in self.ally_unit_names + self.enemy_unit_names]
        f64 = lambda vals: np.array(vals, dtype=np.float64)  # noqa: E731
        self.health_max = f64([u.health_max for u in units])
        self.shield_max = f64([u.smac_max_shield for u in units])
        self.max_cooldown = f64([u.smac_max_cooldown for u in units])
        self.energy_start = f64([u.energy_start for u in units])
        self.type_col = np.array([sc.ally_type_index(n) for n in self.ally_unit_names]
                                 + [sc.enemy_type_index(n) for n in self.enemy_unit_names], dtype=np.int64)
        self.static = unit_arrays(units)
        #: air-unit and healer constants (``units.AirHealArrays``); ``healer`` marks SMAC's medivacs
        self.air_heal = air_heal_arrays(units)
        self.healer = self.air_heal.healer
        groups, start = [], 0
        for _, count in sc.allies:
            groups.append((start, count))
            start += count
        self._ally_groups = np.array(groups, dtype=np.int64)
        self._ally_spacing = 2 * max(UNIT_TYPES[n].radius for n, _ in sc.allies) + engine.SPAWN_GAP
        self._enemy_spacing = 2 * max(UNIT_TYPES[n].radius for n, _ in sc.enemies) + engine.SPAWN_GAP
        self.pathing_grid = sc.pathing_grid()
        self.map_x = self.map_y = MAP_SIZE
        self.max_distance_x = self.max_distance_y = float(MAP_SIZE)
        # SMAC accumulates max_reward from the enemies' full health and shields
        self.max_reward = (sc.n_enemies * args["reward_death_value"] + args["reward_win"]
                           + sum(UNIT_TYPES[n].health_max + UNIT_TYPES[n].shield_max
                                 for n in self.enemy_unit_names))
        self._reward_params = np.array([
            float(args["reward_only_positive"]), float(args["reward_death_value"]),
            float(args["reward_negative_scale"]), float(args["reward_sparse"]), float(args["reward_win"]),
            float(args["reward_defeat"]), float(args["reward_scale"]),
            self.max_reward / args["reward_scale_rate"], float(self.episode_limit)])
        self._seed = seed
        self._env_seeds = _derive_env_seeds(seed, self.n_envs)
        self._episodes_started = np.zeros(self.n_envs, dtype=np.int64)
        self._step_kernel = (engine.step_envs_parallel if self.n_envs >= PARALLEL_FROM
                             else engine.step_envs_serial)
        self.record_replay = bool(record_replay)
        self.replay_dir = args["replay_dir"]
        self.replay_prefix = args["replay_prefix"] or map_name
        #: SMAC's scripted agents, acting instead of the given actions (``heuristic_ai``), or ``None``
        self.heuristic = (SmacHeuristic(self.ally_unit_names, self.enemy_unit_names, self.n_envs,
                                        rest=args["heuristic_rest"]) if args["heuristic_ai"] else None)
        self._allocate()
        self._stats = dict(battles_won=0, battles_game=0, timeouts=0)
        self.reset()

    # ------------------------------------------------------------------ state
    def _allocate(self) -> None:
        B, U, N = self.n_envs, self.n_agents + self.n_enemies, self.n_agents
        self.x = np.zeros((B, U))
        self.y = np.zeros((B, U))
        self.health = np.zeros((B, U))
        self.shield = np.zeros((B, U))
        self.cooldown = np.zeros((B, U))
        self.energy = np.zeros((B, U))
        self.order = np.zeros((B, U), dtype=np.int64)
        self.order_x = np.zeros((B, U))
        self.order_y = np.zeros((B, U))
        self.target = np.full((B, U), -1, dtype=np.int64)
        self.combat = engine.new_combat_state(B, U)
        self.since_damage = np.zeros((B, U))
        self.fired_at = np.full((B, U), -1, dtype=np.int64)
        self.death_tracker = np.zeros((B, U), dtype=np.int64)
        self.last_action = np.full((B, N), -1, dtype=np.int64)
        self.episode_steps = np.zeros(B, dtype=np.int64)
        self.keys = np.zeros(B, dtype=np.uint64)
        self.terminated = np.zeros(B, dtype=np.bool_)
        self.avail = np.zeros((B, N, self.n_actions), dtype=np.int32)
        self._scratch_prev_health = np.zeros((B, U))
        self._scratch_prev_shield = np.zeros((B, U))
        self._scratch_int = np.zeros((B, U), dtype=np.int64)
        self._scratch_order = np.zeros((B, U), dtype=np.int64)
        self._obs_cache: np.ndarray | None = None
        self._state_cache: np.ndarray | None = None
        self._frames: list[list[dict]] = [[] for _ in range(B)]
        self._last_episode_frames: list[list[dict]] = [[] for _ in range(B)]

    def _refresh(self) -> None:
        """Recompute the action masks; observations and states are rebuilt on demand."""
        build_avail_actions(self.x, self.y, self.health, self.pathing_grid, self.n_agents,
                            float(self.move_amount), self.healer, self.avail)
        self._obs_cache = None
        self._state_cache = None

    def reset(self, env_mask: np.ndarray | None = None) -> None:
        mask = np.ones(self.n_envs, dtype=np.bool_) if env_mask is None else self._check_mask(env_mask)
        for arr, value in ((self.cooldown, 0.0), (self.order, engine.ORDER_IDLE), (self.order_x, 0.0),
                           (self.order_y, 0.0), (self.target, -1),
                           (self.since_damage, 0.0), (self.fired_at, -1), (self.death_tracker, 0),
                           (self.last_action, -1)):
            arr[mask] = value
        self.health[mask] = self.health_max
        self.shield[mask] = self.shield_max
        self.energy[mask] = self.energy_start
        engine.reset_combat_state(self.combat, mask)
        self.episode_steps[mask] = 0
        self.terminated[mask] = False
        engine.spawn_envs(mask, self.keys, self._env_seeds, self._episodes_started, self.x, self.y,
                          self._ally_spacing, self._enemy_spacing, self._ally_groups, self.n_agents,
                          ALLY_SPAWN, ENEMY_SPAWN)
        self._episodes_started[mask] += 1
        if self.heuristic is not None:
            self.heuristic.reset(mask)
        self._refresh()
        if self.record_replay:
            for b in np.flatnonzero(mask):
                self._frames[b] = [self._snapshot(b)]

    def _check_mask(self, env_mask) -> np.ndarray:
        mask = np.asarray(env_mask)
        if mask.shape != (self.n_envs,) or mask.dtype != np.bool_:
            raise ValueError(f"env_mask must be a bool array of shape ({self.n_envs},), "
                             f"got dtype {mask.dtype} and shape {mask.shape}.")
        return mask

    # ------------------------------------------------------------------ stepping
    def _action_array(self, actions) -> np.ndarray:
        """``actions`` as int64 ``[B, N]``; a wrong shape or a non-integer dtype is an error."""
        acts = np.asarray(actions)
        expected = (self.n_envs, self.n_agents)
        if acts.shape != expected:
            raise ValueError(f"actions must have shape {expected} (n_envs, n_agents), got {acts.shape}.")
        if acts.dtype.kind not in "iu":  # signed or unsigned integers (not bool)
            raise TypeError(f"actions must be integers (action ids 0..{self.n_actions - 1}), "
                            f"got dtype {acts.dtype}.")
        return acts.astype(np.int64, copy=False)

    def _check_actions(self, actions, active: np.ndarray) -> np.ndarray:
        """``actions`` as int64 ``[B, N]``; an action out of range or not available to an agent of an
        ``active`` environment is an error naming the first such agent (out of range first)."""
        acts = self._action_array(actions)
        out_of_range, unavailable = find_invalid_actions(acts, self.avail, active)
        if out_of_range >= 0:
            b, i = divmod(out_of_range, self.n_agents)
            raise ValueError(f"env {b}, agent {i}: action {acts[b, i]} is out of range; actions are "
                             f"0..{self.n_actions - 1} on {self.map_name}.")
        if unavailable >= 0:
            b, i = divmod(unavailable, self.n_agents)
            valid = np.flatnonzero(self.avail[b, i]).tolist()
            raise ValueError(f"env {b}, agent {i}: action {acts[b, i]} ({self.describe_action(acts[b, i], i)}) "
                             f"is not available; available actions: {valid} "
                             f"({', '.join(self.describe_action(a, i) for a in valid)}).")
        return acts

    def describe_action(self, action: int, agent: int | None = None) -> str:
        """Words for ``action`` (of ``agent``: a healer's actions ``6 + j`` heal ally ``j``)."""
        names = ("no-op", "stop", "move north", "move south", "move east", "move west")
        if action < 6:
            return names[action]
        if agent is not None and self.healer[agent]:
            return f"heal ally {action - 6}"
        return f"attack enemy {action - 6}"

    def step(self, actions):
        """See ``BatchedMultiAgentEnv.step``. With ``heuristic_ai`` SMAC's scripted agents act instead of
        ``actions`` (which then only need the right shape); ``info["actions"]`` holds what they did."""
        active = ~self.terminated
        if self.heuristic is None:
            acts = self._check_actions(actions, active)
        else:
            self._action_array(actions)
            acts = self.heuristic.actions(self.x, self.y, self.health, self.health_max, self.avail, active)
        B = self.n_envs
        reward = np.zeros(B, dtype=np.float32)  # the kernel rounds each env's float64 reward into it
        newly_terminated = np.zeros(B, dtype=np.bool_)
        won = np.zeros(B, dtype=np.bool_)
        timeout = np.zeros(B, dtype=np.bool_)
        dead = np.zeros((B, 2), dtype=np.int64)
        self._step_kernel(acts, active, self.n_agents, self.x, self.y, self.health, self.shield,
                          self.cooldown, self.order, self.order_x, self.order_y, self.target,
                          self.since_damage, self.fired_at, self.keys, self.episode_steps,
                          self.death_tracker, self.last_action, *self.static, *self.air_heal,
                          self.energy, *self.combat,
                          self.pathing_grid, ALLY_SPAWN[0], ALLY_SPAWN[1], self.step_mul,
                          float(self.move_amount), self._reward_params, reward, newly_terminated, won,
                          timeout, dead, self._scratch_prev_health, self._scratch_prev_shield,
                          self._scratch_int, self._scratch_order)
        self.terminated |= newly_terminated
        ended = int(newly_terminated.sum())
        if ended:
            self._stats["battles_game"] += ended
            self._stats["battles_won"] += int(won.sum())
            self._stats["timeouts"] += int(timeout.sum())
        self._refresh()
        if self.record_replay:
            self._record(active, newly_terminated)
        # SMAC reports a timeout as info["episode_limit"] only with continuing_episode (PyMARL then bootstraps);
        # otherwise it is an ordinary terminal step
        info = {"battle_won": won, "dead_allies": dead[:, 0], "dead_enemies": dead[:, 1],
                "episode_limit": timeout & self.continuing_episode}
        if self.heuristic is not None:
            info["actions"] = acts
        return reward, self.terminated.copy(), info

    # ------------------------------------------------------------------ observations
    def get_obs(self) -> np.ndarray:
        if self._obs_cache is None:
            lay = self.layout
            out = np.empty((self.n_envs, self.n_agents, lay.obs_vector_len), dtype=np.float32)
            build_obs(self.x, self.y, self.health, self.shield, self.health_max, self.shield_max,
                      self.type_col, self.avail, self.pathing_grid, self.last_action, self.episode_steps,
                      float(self.episode_limit), self.n_agents, float(self.move_amount), lay.unit_type_bits,
                      lay.shield_bits_ally, lay.shield_bits_enemy, lay.obs_all_health, lay.obs_own_health,
                      lay.obs_last_action, lay.obs_pathing_grid, lay.obs_timestep_number, out)
            self._obs_cache = out
        return self._obs_cache.copy()

    def get_state(self) -> np.ndarray:
        if self._state_cache is None:
            lay = self.layout
            if lay.obs_instead_of_state:
                self._state_cache = self.get_obs().reshape(self.n_envs, -1)
            else:
                out = np.empty((self.n_envs, lay.state_size), dtype=np.float32)
                build_state(self.x, self.y, self.health, self.shield, self.cooldown, self.energy,
                            self.health_max, self.shield_max, self.max_cooldown, self.healer, self.type_col,
                            self.last_action,
                            self.episode_steps, float(self.episode_limit), self.n_agents, self.n_actions,
                            lay.unit_type_bits, lay.shield_bits_ally, lay.shield_bits_enemy,
                            lay.state_last_action, lay.state_timestep_number, float(self.map_x),
                            float(self.map_y), self.max_distance_x, self.max_distance_y, out)
                self._state_cache = out
        return self._state_cache.copy()

    def get_avail_actions(self) -> np.ndarray:
        return self.avail.copy()

    def get_obs_size(self) -> int:
        return self.layout.obs_size

    def get_state_size(self) -> int:
        return self.layout.state_size

    def get_total_actions(self) -> int:
        return self.n_actions

    def get_env_info(self) -> dict[str, Any]:
        shield = ["shield"] if self.layout.shield_bits_ally else []
        enemy_shield = ["shield"] if self.layout.shield_bits_enemy else []
        bits = [f"type_{i}" for i in range(self.layout.unit_type_bits)]
        return {
            "state_shape": self.get_state_size(), "obs_shape": self.get_obs_size(),
            "n_actions": self.n_actions, "n_agents": self.n_agents, "episode_limit": self.episode_limit,
            "agent_features": ["health", "energy/cooldown", "rel_x", "rel_y"] + shield + bits,
            "enemy_features": ["health", "rel_x", "rel_y"] + enemy_shield + bits,
            "n_enemies": self.n_enemies,
        }

    def get_stats(self) -> dict:
        games = self._stats["battles_game"]
        return {"battles_won": self._stats["battles_won"], "battles_game": games,
                "battles_draw": self._stats["timeouts"],
                "win_rate": self._stats["battles_won"] / games if games else 0.0,
                "timeouts": self._stats["timeouts"], "restarts": 0}

    # ------------------------------------------------------------------ situations, seeds, replays
    def set_unit_situation(self, env_index: int, allies: dict, enemies: dict, last_action=None,
                           episode_steps: int | None = None) -> None:
        """Put environment ``env_index`` into a given unit situation (for checks against SMAC's code).

        ``allies`` / ``enemies`` map ``x``, ``y``, ``health``, ``shield``, ``cooldown``, ``energy`` to
        sequences of length ``n_agents`` / ``n_enemies`` (missing keys keep their value; health 0 = dead;
        energy only matters for healers).
        ``last_action`` is an ``[n_agents, n_actions]`` one-hot array or ``None`` (no action yet).
        Unit types are fixed by the map (``ally_unit_names`` / ``enemy_unit_names``). With ``heuristic_ai``
        the scripted agents keep their targets (``reset`` forgets them).
        """
        b = env_index
        for units, lo, n in ((allies, 0, self.n_agents), (enemies, self.n_agents, self.n_enemies)):
            unknown = set(units) - {"x", "y", "health", "shield", "cooldown", "energy"}
            if unknown:
                raise ValueError(f"Unknown unit fields {sorted(unknown)}; use x, y, health, shield, cooldown, "
                                 "energy.")
            for name, values in units.items():
                values = np.asarray(values, dtype=np.float64)
                if values.shape != (n,):
                    raise ValueError(f"{name} must have {n} values, got shape {values.shape}.")
                getattr(self, name)[b, lo:lo + n] = values
        if last_action is None:
            self.last_action[b] = -1
        else:
            onehot = np.asarray(last_action)
            self.last_action[b] = np.where(onehot.any(axis=1), onehot.argmax(axis=1), -1)
        if episode_steps is not None:
            self.episode_steps[b] = episode_steps
        self.death_tracker[b] = self.health[b] <= 0
        self.terminated[b] = False
        engine.reset_combat_state(self.combat, np.arange(self.n_envs) == b)  # no attacks under way
        self._refresh()

    def state_dict(self) -> dict:
        return {"env_seeds": self._env_seeds.copy(), "episodes_started": self._episodes_started.copy(),
                "stats": dict(self._stats)}

    def load_state_dict(self, state: dict) -> None:
        if len(state["env_seeds"]) != self.n_envs:
            raise ValueError(f"This environment state is for {len(state['env_seeds'])} environments, "
                             f"not {self.n_envs}; build the env with the same n_envs.")
        self._env_seeds = np.asarray(state["env_seeds"], dtype=np.uint64).copy()
        self._episodes_started = np.asarray(state["episodes_started"], dtype=np.int64).copy()
        self._stats = dict(state["stats"])

    def _snapshot(self, b: int) -> dict:
        return {"step": int(self.episode_steps[b]), "x": self.x[b].copy(), "y": self.y[b].copy(),
                "health": self.health[b].copy(), "shield": self.shield[b].copy(),
                "fired_at": self.fired_at[b].copy()}

    def _record(self, active: np.ndarray, ended: np.ndarray) -> None:
        for b in np.flatnonzero(active):
            self._frames[b].append(self._snapshot(b))
            if ended[b]:
                self._last_episode_frames[b] = self._frames[b]

    def episode_frames(self, env_index: int) -> list[dict]:
        """Snapshots of the last finished episode of ``env_index`` (the current one if none finished)."""
        return self._last_episode_frames[env_index] or self._frames[env_index]

    def save_replay(self, env_indices=None) -> list[str]:
        """Write an animated GIF of the last episode of each chosen environment; returns the paths."""
        from .replay import render_episode_gif

        if not self.record_replay:
            raise RuntimeError("This environment was built without record_replay=True, so it kept no "
                               "episodes to replay. Build it with record_replay=True (save_replay=True "
                               "in a run does this).")
        indices = range(self.n_envs) if env_indices is None else env_indices
        directory = self.replay_dir or os.path.join(os.getcwd(), "replays")
        os.makedirs(directory, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        paths = []
        for b in indices:
            path = os.path.join(directory, f"{self.replay_prefix}_{stamp}_env{b}.gif")
            render_episode_gif(self, self.episode_frames(b), path)
            paths.append(path)
        return paths

    def close(self) -> None:
        """Nothing to release: the simulator holds no processes or files."""
