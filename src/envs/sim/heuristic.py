"""SMAC's scripted agents (``heuristic_ai`` / ``heuristic_rest``), vectorised over environments.

A re-statement of ``StarCraft2Env.get_agent_action_heuristic`` (oxwhirl/smac,
``smac/env/starcraft2/starcraft2.py``) in the batched engine's terms. Each living agent keeps a target
across steps, and picks a new one only when it has none or its target died:

* a fighter targets the living enemy nearest to it (centre distance; on a tie the lowest enemy id);
  SMAC's marauders never consider enemy medivacs (:data:`IGNORED_TARGETS`);
* a healer (:data:`HEALER_UNITS`) targets the nearest living, damaged ally that is not a healer, and picks
  again as soon as its target is back at full health.

The chosen action is "attack (heal) the target", action ``6 + target``. With ``heuristic_rest`` the agent
takes it only if it is available; otherwise it moves one step towards the target, east/west when the
target is further away along x than along y, else north/south. An agent with no possible target takes
no-op (0) and forgets its target; so does a dead agent. Targets persist until ``reset``.

Where this departs from SMAC's bookkeeping: SMAC stores the *given* actions as the step's last action (its
``obs_last_action`` / ``state_last_action`` features) and only writes the heuristic's choices back into
the caller's action list; here the actions taken are what the engine executes, stores and returns. SMAC
also computes an attack action for a dead agent (which the game then ignores); here a dead agent no-ops.
"""
from __future__ import annotations

import numba
import numpy as np

from .features import N_ACTIONS_NO_ATTACK

#: Unit types that heal allies instead of attacking enemies (SMAC tests ``unit_type == medivac_id``).
HEALER_UNITS = frozenset({"medivac"})
#: ``(agent type, enemy type)`` pairs SMAC's heuristic never targets: marauders skip medivacs.
IGNORED_TARGETS = frozenset({("marauder", "medivac")})

_MOVE_NORTH, _MOVE_SOUTH, _MOVE_EAST, _MOVE_WEST = 2, 3, 4, 5


@numba.njit(cache=True, error_model="numpy", inline="always")
def _nearest(x, y, b, i, candidates):
    """The unit of ``candidates`` (int64 ``[K]``, unit indices) nearest to unit ``i``; -1 if K = 0."""
    best = -1
    best_d = np.inf
    for u in candidates:
        d = np.hypot(x[b, u] - x[b, i], y[b, u] - y[b, i])
        if d < best_d:
            best_d = d
            best = u
    return best


@numba.njit(cache=True, error_model="numpy")
def heuristic_actions(x, y, health, health_max, avail, active, n_agents, healer, may_target, rest, targets,
                      out):
    """SMAC's heuristic action of every agent of every active environment.

    ``x``, ``y``, ``health``: float64 ``[B, U]`` (agents first); ``health_max`` float64 ``[U]``; ``avail``
    int32 ``[B, N, A]``; ``active`` bool ``[B]``; ``healer`` bool ``[N]``; ``may_target`` bool ``[N, E]``
    (False where the agent's type never targets the enemy's type); ``rest`` (bool) is ``heuristic_rest``.
    ``targets`` int64 ``[B, N]`` holds each agent's target between calls (an enemy id, an ally id for a
    healer, -1 for none) and is updated. Writes the actions into ``out`` int64 ``[B, N]`` (0 in inactive
    environments).
    """
    n_envs = x.shape[0]
    n_units = x.shape[1]
    candidates = np.empty(n_units, dtype=np.int64)
    for b in range(n_envs):
        for i in range(n_agents):
            out[b, i] = 0
            if not active[b]:
                continue
            if health[b, i] <= 0:
                targets[b, i] = -1
                continue
            t = targets[b, i]
            if healer[i]:
                if t < 0 or health[b, t] <= 0 or health[b, t] == health_max[t]:
                    k = 0
                    for a in range(n_agents):
                        if not healer[a] and health[b, a] > 0 and health[b, a] != health_max[a]:
                            candidates[k] = a
                            k += 1
                    t = _nearest(x, y, b, i, candidates[:k])
                unit = t
            else:
                if t < 0 or health[b, n_agents + t] <= 0:
                    k = 0
                    for e in range(n_units - n_agents):
                        if may_target[i, e] and health[b, n_agents + e] > 0:
                            candidates[k] = n_agents + e
                            k += 1
                    t = _nearest(x, y, b, i, candidates[:k])
                    if t >= 0:
                        t -= n_agents
                unit = n_agents + t
            targets[b, i] = t
            if t < 0:
                continue
            action = N_ACTIONS_NO_ATTACK + t
            if rest and avail[b, i, action] == 0:
                dx = x[b, unit] - x[b, i]
                dy = y[b, unit] - y[b, i]
                if abs(dx) > abs(dy):
                    action = _MOVE_EAST if dx > 0 else _MOVE_WEST
                else:
                    action = _MOVE_NORTH if dy > 0 else _MOVE_SOUTH
            out[b, i] = action


class SmacHeuristic:
    """SMAC's scripted controller for ``n_envs`` environments of one map, with its per-agent targets.

    ``SmacHeuristic(ally_unit_names, enemy_unit_names, n_envs, rest)``; ``reset(env_mask)`` forgets the
    targets of the environments being reset; ``actions(x, y, health, health_max, avail, active)`` returns
    the actions (int64 ``[B, N]``) and updates the targets (``targets``, int64 ``[B, N]``).
    """

    def __init__(self, ally_unit_names: list[str], enemy_unit_names: list[str], n_envs: int, rest: bool):
        self.n_agents = len(ally_unit_names)
        self.rest = bool(rest)
        self.healer = np.array([name in HEALER_UNITS for name in ally_unit_names], dtype=np.bool_)
        self.may_target = np.array([[(a, e) not in IGNORED_TARGETS for e in enemy_unit_names]
                                    for a in ally_unit_names], dtype=np.bool_).reshape(self.n_agents, -1)
        self.targets = np.full((n_envs, self.n_agents), -1, dtype=np.int64)

    def reset(self, env_mask: np.ndarray | None = None) -> None:
        """Forget the targets of the environments where ``env_mask`` (bool ``[B]``) is true (all if ``None``)."""
        if env_mask is None:
            self.targets[:] = -1
        else:
            self.targets[env_mask] = -1

    def actions(self, x, y, health, health_max, avail, active) -> np.ndarray:
        """The heuristic's actions, int64 ``[B, N]`` (see :func:`heuristic_actions` for the arrays)."""
        out = np.zeros(self.targets.shape, dtype=np.int64)
        heuristic_actions(x, y, health, health_max, avail, active, self.n_agents, self.healer, self.may_target,
                          self.rest, self.targets, out)
        return out
