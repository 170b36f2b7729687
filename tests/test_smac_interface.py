"""The embedded simulator's SMAC interface, value for value against SMAC's own code.

``smac_reference.py`` restates SMAC v1's builders (oxwhirl/smac ``starcraft2.py``) one unit at a time.
These tests compare the simulator with it and with the spec (``shared/spec/smac.md``):

(a) ``get_env_info()`` of every map the simulator offers against the spec's tables (§1) and the reference;
    the flags the simulator cannot honour are rejected with an error naming the flag.
(b) Random unit situations (positions in and at the edge of the pathable area, exact range
    boundaries, dead units, partial health and shields, cooldowns, last actions, step counters) put into
    the environment with ``set_unit_situation``: observations, states and action masks must be equal.
(c) Literal vectors for tiny situations, computed by hand from SMAC's code (the arithmetic is in the
    comments), checked against both the simulator and the reference.

Equality is exact, not approximate: both sides compute every feature in float64 from the same
float32-representable inputs and round once to float32 (SMAC fills float32 arrays from Python floats and
casts its float64 state at the end). The only place the two could legitimately part is a distance within
one float64 ulp of the sight or shoot range, where ``math.hypot`` and the C library's ``hypot`` may round
differently; the exact boundary cases used here (distances of exactly 6 and 9) are exact in both.

The pathing grid is the simulator's own data: the reference reads ``env.pathing_grid`` (bool ``[32, 32]``,
indexed ``[x, y]``).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from envs.sim import SCENARIOS, BatchedStarCraft2Sim, StarCraft2Env
from smac_reference import MAP_PARAMS, RL_UNIT_ORDER, SmacReference, make_unit

# --------------------------------------------------------------------------------------------------
# (a) the map registry and the sizes it implies

#: spec §1: n_agents, n_enemies, limit, n_actions, obs, state, obs with obs_last_action (default flags).
SPEC_SIZES = {
    "3m": (3, 3, 60, 9, 30, 48, 48),
    "8m": (8, 8, 120, 14, 80, 168, 178),
    "5m_vs_6m": (5, 6, 70, 12, 55, 98, 103),
    "10m_vs_11m": (10, 11, 150, 17, 105, 243, 258),
    "27m_vs_30m": (27, 30, 180, 36, 285, 1170, 1221),
    "2s3z": (5, 5, 120, 11, 80, 120, 124),
    "3s5z": (8, 8, 150, 14, 128, 216, 226),
    "3s_vs_3z": (3, 3, 150, 9, 36, 54, 54),
    "3s_vs_4z": (3, 4, 200, 10, 42, 61, 62),
    "3s_vs_5z": (3, 5, 250, 11, 48, 68, 70),
    "MMM": (10, 10, 150, 16, 160, 290, 304),
    "2s_vs_1sc": (2, 1, 300, 7, 17, 27, 24),
    "corridor": (6, 24, 400, 30, 156, 282, 306),
}
#: spec §1, "other registry entries": n_agents, n_enemies, limit.
SPEC_OTHER_ENTRIES = {
    "25m": (25, 25, 150), "8m_vs_9m": (8, 9, 120), "MMM2": (10, 12, 180), "3s5z_vs_3s6z": (8, 9, 170),
    "1c3s5z": (9, 9, 180), "2m_vs_1z": (2, 1, 150), "6h_vs_8z": (6, 8, 150),
    "so_many_baneling": (7, 32, 100), "bane_vs_bane": (24, 24, 200), "2c_vs_64zg": (2, 64, 400),
}
#: spec §1, "other flag settings": obs and state sizes of 5m_vs_6m and 3s_vs_4z.
SPEC_FLAG_SIZES = [
    ({"obs_pathing_grid": True, "obs_terrain_height": True}, {"5m_vs_6m": (72, 98), "3s_vs_4z": (59, 61)}),
    ({"obs_timestep_number": True, "state_timestep_number": True},
     {"5m_vs_6m": (56, 99), "3s_vs_4z": (43, 62)}),
    ({"obs_instead_of_state": True}, {"5m_vs_6m": (55, 275), "3s_vs_4z": (42, 126)}),
    ({"state_last_action": False}, {"5m_vs_6m": (55, 38), "3s_vs_4z": (42, 31)}),
]
#: The maps issue 2 requires of the simulator.
REQUIRED_MAPS = ("3m", "8m", "5m_vs_6m", "8m_vs_9m", "10m_vs_11m", "25m", "27m_vs_30m", "2s3z", "3s5z",
                 "3s5z_vs_3s6z", "3s_vs_3z", "3s_vs_4z", "3s_vs_5z", "2m_vs_1z")
#: The armies of SMAC's maps (the map names spell them out): (agents, enemies) as unit-name counts.
ARMIES = {
    **{f"{n}m": ({"marine": n}, {"marine": n}) for n in (3, 8, 25)},
    **{f"{n}m_vs_{m}m": ({"marine": n}, {"marine": m}) for n, m in ((5, 6), (8, 9), (10, 11), (27, 30))},
    "2s3z": ({"stalker": 2, "zealot": 3}, {"stalker": 2, "zealot": 3}),
    "3s5z": ({"stalker": 3, "zealot": 5}, {"stalker": 3, "zealot": 5}),
    "3s5z_vs_3s6z": ({"stalker": 3, "zealot": 5}, {"stalker": 3, "zealot": 6}),
    **{f"3s_vs_{m}z": ({"stalker": 3}, {"zealot": m}) for m in (3, 4, 5)},
    "2m_vs_1z": ({"marine": 2}, {"zealot": 1}),
    "MMM": ({"marauder": 2, "marine": 7, "medivac": 1}, {"marauder": 2, "marine": 7, "medivac": 1}),
    "MMM2": ({"marauder": 2, "marine": 7, "medivac": 1}, {"marauder": 3, "marine": 8, "medivac": 1}),
}


def make_reference(env: StarCraft2Env, **flags) -> SmacReference:
    """The reference for ``env``'s map and flags, on the simulator's pathing grid."""
    return SmacReference(env.map_name, pathing_grid=env.pathing_grid, **flags)


def expected_env_info(ref: SmacReference) -> dict:
    """SMAC's ``get_env_info()`` plus the shared contract's ``n_enemies``."""
    return {**ref.get_env_info(), "n_enemies": ref.n_enemies}


def test_simulator_offers_the_required_maps():
    missing = sorted(set(REQUIRED_MAPS) - set(SCENARIOS))
    assert not missing, f"maps required by issue 2 but not offered: {missing}"


@pytest.mark.parametrize("map_name", sorted(SPEC_SIZES))
def test_reference_reproduces_the_spec_size_table(map_name):
    """The oracle itself: SMAC's size formulas give the spec's verified numbers for every map."""
    n_agents, n_enemies, limit, n_actions, obs, state, obs_last = SPEC_SIZES[map_name]
    grid = np.ones((32, 32), dtype=bool)
    info = SmacReference(map_name, grid).get_env_info()
    assert (info["n_agents"], MAP_PARAMS[map_name]["n_enemies"], info["episode_limit"]) == (
        n_agents, n_enemies, limit)
    assert (info["n_actions"], info["obs_shape"], info["state_shape"]) == (n_actions, obs, state)
    assert SmacReference(map_name, grid, obs_last_action=True).get_obs_size() == obs_last


def test_reference_reproduces_the_spec_flag_table_and_registry():
    grid = np.ones((32, 32), dtype=bool)
    for flags, sizes in SPEC_FLAG_SIZES:
        for map_name, (obs, state) in sizes.items():
            ref = SmacReference(map_name, grid, terrain_height=np.zeros((32, 32)), **flags)
            assert (ref.get_obs_size(), ref.get_state_size()) == (obs, state), (map_name, flags)
    for map_name, (n_agents, n_enemies, limit) in SPEC_OTHER_ENTRIES.items():
        p = MAP_PARAMS[map_name]
        assert (p["n_agents"], p["n_enemies"], p["limit"]) == (n_agents, n_enemies, limit), map_name


@pytest.mark.parametrize("map_name", sorted(SCENARIOS))
def test_env_info_matches_smac(map_name):
    env = StarCraft2Env(map_name=map_name)
    ref = make_reference(env)
    info = env.get_env_info()
    assert info == expected_env_info(ref)
    if map_name in SPEC_SIZES:
        n_agents, n_enemies, limit, n_actions, obs, state, obs_last = SPEC_SIZES[map_name]
        assert (info["n_agents"], info["n_enemies"], info["episode_limit"]) == (n_agents, n_enemies, limit)
        assert (info["n_actions"], info["obs_shape"], info["state_shape"]) == (n_actions, obs, state)
        assert StarCraft2Env(map_name=map_name, obs_last_action=True).get_obs_size() == obs_last
    if map_name in SPEC_OTHER_ENTRIES:
        assert (info["n_agents"], info["n_enemies"], info["episode_limit"]) == SPEC_OTHER_ENTRIES[map_name]
    assert (env.get_obs_size(), env.get_state_size(), env.get_total_actions()) == (
        info["obs_shape"], info["state_shape"], info["n_actions"])
    obs, state = env.reset()
    assert len(obs) == info["n_agents"]
    assert all(o.shape == (info["obs_shape"],) and o.dtype == np.float32 for o in obs)
    assert state.shape == (info["state_shape"],) and state.dtype == np.float32
    assert np.asarray(env.get_avail_actions()).shape == (info["n_agents"], info["n_actions"])
    # reward scale: SMAC's max_reward adds the enemies' full health and shields seen in the first episode
    ref.set_units([make_unit(n, 9.0, 16.0, 1.0) for n in env.ally_unit_names],
                  [make_unit(n, 23.0, 16.0, 1.0) for n in env.enemy_unit_names])
    assert env.max_reward == ref.max_reward
    spec_max_reward = {"5m_vs_6m": 60 + 200 + 6 * 45, "3s_vs_4z": 40 + 200 + 4 * (100 + 50)}  # 530, 840
    if map_name in spec_max_reward:
        assert env.max_reward == spec_max_reward[map_name]


@pytest.mark.parametrize("flags,sizes", SPEC_FLAG_SIZES,
                         ids=["pathing+height", "timesteps", "obs_instead_of_state", "no_state_last_action"])
@pytest.mark.parametrize("map_name", ["5m_vs_6m", "3s_vs_4z"])
def test_flag_variant_sizes_match_smac(map_name, flags, sizes):
    obs_size, state_size = sizes[map_name]
    if flags.get("obs_terrain_height"):
        # the simulator has no terrain heights: the flag is refused; pathing alone keeps SMAC's sizes
        with pytest.raises(ValueError, match="obs_terrain_height"):
            StarCraft2Env(map_name=map_name, **flags)
        env = StarCraft2Env(map_name=map_name, obs_pathing_grid=True)
        assert env.get_obs_size() == obs_size - 9
        assert env.get_obs_size() == make_reference(env, obs_pathing_grid=True).get_obs_size()
        assert env.get_state_size() == state_size
        return
    env = StarCraft2Env(map_name=map_name, **flags)
    assert (env.get_obs_size(), env.get_state_size()) == (obs_size, state_size)
    info = env.get_env_info()
    assert (info["obs_shape"], info["state_shape"]) == (obs_size, state_size)


@pytest.mark.parametrize("map_name", sorted(ARMIES))
def test_armies_and_agent_type_order(map_name):
    """The map's units, with agents grouped by SMAC's ally unit-type ids (its sort key's first field)."""
    env = StarCraft2Env(map_name=map_name)
    allies, enemies = ARMIES[map_name]
    assert Counter(env.ally_unit_names) == Counter(allies)
    assert Counter(env.enemy_unit_names) == Counter(enemies)
    order = RL_UNIT_ORDER[MAP_PARAMS[map_name]["map_type"]]
    ranks = [order.index(name) for name in env.ally_unit_names]
    assert ranks == sorted(ranks)


@pytest.mark.parametrize("map_name", ["3m", "2s3z", "3s5z"])
def test_agents_of_one_type_are_sorted_by_position_after_reset(map_name):
    """SMAC sorts the agents by (unit_type, x, y) when an episode starts; x is rel_x in the state."""
    env = StarCraft2Env(map_name=map_name, seed=3)
    nf_al = len(env.get_env_info()["agent_features"])
    names = env.ally_unit_names
    for _ in range(5):
        _, state = env.reset()
        xs = state[: env.n_agents * nf_al].reshape(env.n_agents, nf_al)[:, 2]
        for name in set(names):
            same = [xs[i] for i in range(env.n_agents) if names[i] == name]
            assert same == sorted(same), f"{map_name}: {name} agents not sorted by x: {same}"


@pytest.mark.parametrize("flag,value", [("obs_terrain_height", True), ("game_version", "4.10")])
def test_flags_the_simulator_cannot_honour_are_rejected(flag, value):
    with pytest.raises(ValueError, match=flag):
        StarCraft2Env(map_name="3m", **{flag: value})
    with pytest.raises(ValueError, match=flag):
        BatchedStarCraft2Sim(map_name="3m", n_envs=2, **{flag: value})


def test_unknown_map_and_argument_are_explained():
    with pytest.raises(ValueError) as err:
        StarCraft2Env(map_name="4m_vs_5m")
    assert "4m_vs_5m" in str(err.value) and "5m_vs_6m" in str(err.value) and "3s_vs_4z" in str(err.value)
    with pytest.raises(TypeError, match="obs_last_actions.*obs_last_action"):
        StarCraft2Env(map_name="3m", obs_last_actions=True)


# --------------------------------------------------------------------------------------------------
# (b) random situations

RANDOM_MAPS = ["3m", "5m_vs_6m", "3s_vs_4z", "2s3z", "3s5z", "MMM", "MMM2"]
FLAG_SETS = {
    "defaults": {},
    "obs_last_action": {"obs_last_action": True},
    "obs_pathing_grid": {"obs_pathing_grid": True},
    "obs_instead_of_state": {"obs_instead_of_state": True},
    "no_state_last_action": {"state_last_action": False},
    "obs_timestep_number": {"obs_timestep_number": True},
    "state_timestep_number": {"state_timestep_number": True},
    "no_obs_all_health": {"obs_all_health": False},
    "no_obs_own_health": {"obs_own_health": False},  # no effect: obs_all_health forces it on
    "no_health_at_all": {"obs_all_health": False, "obs_own_health": False},
    "move_amount_4": {"move_amount": 4, "obs_pathing_grid": True},  # probes 2 cells, points 4 and 8 away
    "everything": {"obs_last_action": True, "obs_pathing_grid": True, "obs_instead_of_state": True,
                   "obs_timestep_number": True, "state_timestep_number": True},
}
SITUATIONS_PER_CASE = 25
BOUNDARY_DISTANCES = (6.0, 9.0)  # shoot range (inclusive) and sight range (strict)
MAP_EDGE = float(np.nextafter(np.float32(32.0), np.float32(0.0)))  # largest float32 below 32


def _f32(value: float) -> float:
    """``value`` rounded to float32 (SC2 reports positions, health, shields and cooldowns as floats)."""
    return float(np.float32(value))


class SituationSampler:
    """Random unit situations for one map, on the simulator's pathing grid."""

    def __init__(self, env: StarCraft2Env, rng: np.random.Generator):
        self.env = env
        self.rng = rng
        grid = np.asarray(env.pathing_grid)
        self.grid = grid
        self.cells = np.argwhere(grid)
        padded = np.pad(grid, 1, constant_values=False)
        inner = padded[1:-1, 1:-1]
        border = inner & ~(padded[2:, 1:-1] & padded[:-2, 1:-1] & padded[1:-1, 2:] & padded[1:-1, :-2])
        self.edge_cells = np.argwhere(border)
        self.shielded = MAP_PARAMS[env.map_name]["a_race"] == "P", MAP_PARAMS[env.map_name]["b_race"] == "P"

    def _pathable(self, x: float, y: float) -> bool:
        cx, cy = int(x), int(y)
        return 0 <= x < 32 and 0 <= y < 32 and bool(self.grid[cx, cy])

    def _in_cell(self, cells: np.ndarray) -> tuple[float, float]:
        cx, cy = cells[self.rng.integers(len(cells))]
        x = min(_f32(cx + self.rng.random()), MAP_EDGE)
        y = min(_f32(cy + self.rng.random()), MAP_EDGE)
        return x, y

    def position(self, centre: tuple[float, float]) -> tuple[float, float]:
        """Near a common centre (so units see and reach each other), anywhere pathable, or on an edge."""
        mode = self.rng.random()
        if mode < 0.55:
            for _ in range(20):
                x, y = _f32(centre[0] + self.rng.normal(0, 3.5)), _f32(centre[1] + self.rng.normal(0, 3.5))
                if self._pathable(x, y):
                    return x, y
        if mode < 0.85:
            return self._in_cell(self.cells)
        return self._in_cell(self.edge_cells)

    def unit(self, name: str, centre, shielded: bool):
        x, y = self.position(centre)
        u = make_unit(name, x, y, 0.0)
        r = self.rng.random()
        u.health = 0.0 if r < 0.2 else u.health_max if r < 0.4 else _f32(self.rng.uniform(0.01, u.health_max))
        if shielded:
            r = self.rng.random()
            u.shield = (0.0 if r < 0.2 else u.shield_max if r < 0.4
                        else _f32(self.rng.uniform(0, u.shield_max)))
        u.weapon_cooldown = 0.0 if self.rng.random() < 0.3 else _f32(self.rng.uniform(0, 40))
        if name == "medivac":  # SMAC's state shows a medivac's energy (0..200) instead of its cooldown
            u.energy = 0.0 if self.rng.random() < 0.2 else _f32(self.rng.uniform(0, 200))
        return u

    def place_at_boundary(self, anchor, other) -> None:
        """Put ``other`` exactly 6 or 9 cells from ``anchor`` along an axis (positions on a 1/4096 grid,
        so the offsets and the distance are exact in float32 and float64)."""
        distance = float(self.rng.choice(BOUNDARY_DISTANCES))
        anchor.x, anchor.y = (min(round(v * 4096) / 4096, 32 - 1 / 4096) for v in (anchor.x, anchor.y))
        options = [(anchor.x + dx * distance, anchor.y + dy * distance)
                   for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        options = [p for p in options if 0 <= p[0] < 32 and 0 <= p[1] < 32]
        options = [p for p in options if self._pathable(*p)] or options
        if options:
            other.x, other.y = options[self.rng.integers(len(options))]

    def sample(self):
        """Unit lists (allies in agent order, enemies in enemy order), one-hot last actions or None, and
        the episode step."""
        env, rng = self.env, self.rng
        centre = self._in_cell(self.cells)
        allies = [self.unit(n, centre, self.shielded[0]) for n in env.ally_unit_names]
        enemies = [self.unit(n, centre, self.shielded[1]) for n in env.enemy_unit_names]
        for _ in range(rng.integers(0, 3)):
            anchor = allies[rng.integers(len(allies))]
            others = enemies if rng.random() < 0.7 else [a for a in allies if a is not anchor]
            self.place_at_boundary(anchor, others[rng.integers(len(others))])
        last_action = None
        if rng.random() < 0.8:
            last_action = np.eye(env.n_actions)[rng.integers(0, env.n_actions, env.n_agents)]
            last_action[rng.random(env.n_agents) < 0.1] = 0.0  # agents without a previous action
        steps = int(rng.integers(0, env.episode_limit + 1))
        return allies, enemies, last_action, steps


def as_situation(units) -> dict:
    """Unit records as ``set_unit_situation``'s column dict."""
    return {"x": [u.x for u in units], "y": [u.y for u in units], "health": [u.health for u in units],
            "shield": [u.shield for u in units], "cooldown": [u.weapon_cooldown for u in units],
            "energy": [u.energy for u in units]}


def describe(map_name, flags, allies, enemies, last_action, steps) -> str:
    rows = [f"map={map_name} flags={flags} episode_steps={steps}"]
    for side, units in (("ally", allies), ("enemy", enemies)):
        rows += [f"  {side} {i} {u.unit_type}: x={u.x!r} y={u.y!r} health={u.health!r} "
                 f"shield={u.shield!r} cooldown={u.weapon_cooldown!r} energy={u.energy!r}"
                 for i, u in enumerate(units)]
    if last_action is not None:
        rows.append(f"  last_action ids={[int(r.argmax()) if r.any() else None for r in last_action]}")
    return "\n".join(rows)


def assert_env_matches_reference(env: StarCraft2Env, ref: SmacReference, context: str) -> None:
    obs_ref = ref.get_obs()
    obs_env = env.get_obs()
    assert len(obs_env) == ref.n_agents
    for i in range(ref.n_agents):
        assert obs_env[i].dtype == np.float32
        np.testing.assert_array_equal(obs_env[i], obs_ref[i].astype(np.float32),
                                      err_msg=f"obs of agent {i}\n{context}")
        np.testing.assert_array_equal(env.get_obs_agent(i), obs_ref[i].astype(np.float32),
                                      err_msg=f"get_obs_agent({i})\n{context}")
        assert env.get_avail_agent_actions(i) == ref.get_avail_agent_actions(i), \
            f"avail of agent {i}\n{context}"
    assert env.get_avail_actions() == ref.get_avail_actions(), context
    state = env.get_state()
    assert state.dtype == np.float32
    np.testing.assert_array_equal(state, ref.get_state(), err_msg=f"state\n{context}")


@pytest.mark.parametrize("flag_set", sorted(FLAG_SETS))
@pytest.mark.parametrize("map_name", RANDOM_MAPS)
def test_random_situations_match_smac(map_name, flag_set):
    flags = FLAG_SETS[flag_set]
    env = StarCraft2Env(map_name=map_name, **flags)
    ref = make_reference(env, **flags)
    seed = [RANDOM_MAPS.index(map_name), sorted(FLAG_SETS).index(flag_set)]
    sampler = SituationSampler(env, np.random.default_rng(seed))
    env.reset()
    for _ in range(SITUATIONS_PER_CASE):
        allies, enemies, last_action, steps = sampler.sample()
        env.set_unit_situation(as_situation(allies), as_situation(enemies), last_action=last_action,
                               episode_steps=steps)
        ref.set_units(allies, enemies, last_action=last_action, episode_steps=steps)
        assert_env_matches_reference(env, ref, describe(map_name, flags, allies, enemies, last_action, steps))


@pytest.mark.parametrize("map_name", ["5m_vs_6m", "2s3z"])
def test_batched_environments_keep_their_own_situations(map_name):
    """Each batch element of the engine is built from its own units only."""
    flags = {"obs_last_action": True, "state_timestep_number": True}
    n_envs = 4
    batch = BatchedStarCraft2Sim(map_name=map_name, n_envs=n_envs, **flags)
    single = StarCraft2Env(map_name=map_name, **flags)
    sampler = SituationSampler(single, np.random.default_rng(7))
    situations = [sampler.sample() for _ in range(n_envs)]
    for b, (allies, enemies, last_action, steps) in enumerate(situations):
        batch.set_unit_situation(b, as_situation(allies), as_situation(enemies), last_action, steps)
    obs, state, avail = batch.get_obs(), batch.get_state(), batch.get_avail_actions()
    assert obs.shape == (n_envs, batch.n_agents, batch.get_obs_size()) and obs.dtype == np.float32
    assert state.shape == (n_envs, batch.get_state_size()) and state.dtype == np.float32
    assert avail.shape == (n_envs, batch.n_agents, batch.n_actions)
    for b, (allies, enemies, last_action, steps) in enumerate(situations):
        ref = make_reference(single, **flags)
        ref.set_units(allies, enemies, last_action=last_action, episode_steps=steps)
        context = describe(map_name, flags, allies, enemies, last_action, steps)
        np.testing.assert_array_equal(obs[b], np.stack(ref.get_obs()), err_msg=f"env {b}\n{context}")
        np.testing.assert_array_equal(state[b], ref.get_state(), err_msg=f"env {b}\n{context}")
        np.testing.assert_array_equal(avail[b], np.array(ref.get_avail_actions()),
                                      err_msg=f"env {b}\n{context}")


# --------------------------------------------------------------------------------------------------
# (c) literal vectors, computed by hand from SMAC's code

def put(env: StarCraft2Env, ref: SmacReference, allies, enemies, last_action=None, steps=0) -> None:
    """The same situation in the simulator and in the reference."""
    env.reset()
    env.set_unit_situation(as_situation(allies), as_situation(enemies), last_action=last_action,
                           episode_steps=steps)
    ref.set_units(allies, enemies, last_action=last_action, episode_steps=steps)


def check_literal(env: StarCraft2Env, ref: SmacReference, obs: dict, state=None, avail=None) -> None:
    """``obs`` maps agent ids to expected vectors (float32 of the hand-computed numbers)."""
    for i, expected in obs.items():
        expected = np.asarray(expected, dtype=np.float32)
        np.testing.assert_array_equal(env.get_obs_agent(i), expected, err_msg=f"simulator, agent {i}")
        np.testing.assert_array_equal(ref.get_obs_agent(i).astype(np.float32), expected,
                                      err_msg=f"reference, agent {i}")
    if state is not None:
        expected = np.asarray(state, dtype=np.float32)
        np.testing.assert_array_equal(env.get_state(), expected, err_msg="simulator state")
        np.testing.assert_array_equal(ref.get_state(), expected, err_msg="reference state")
    if avail is not None:
        assert env.get_avail_actions() == avail
        assert ref.get_avail_actions() == avail


def test_literal_3m_one_visible_enemy_one_dead_ally():
    env = StarCraft2Env(map_name="3m")
    ref = make_reference(env)
    allies = [make_unit("marine", 10.0, 16.0, 45.0, weapon_cooldown=6.0),
              make_unit("marine", 12.0, 16.0, 0.0),  # dead
              make_unit("marine", 10.0, 19.0, 22.5)]
    enemies = [make_unit("marine", 13.0, 16.0, 30.0),
               make_unit("marine", 25.0, 16.0, 45.0),
               make_unit("marine", 25.0, 20.0, 45.0)]
    last_action = np.eye(9)[[6, 0, 1]]  # attack enemy 0, no-op (dead), stop
    put(env, ref, allies, enemies, last_action)
    # Pathing on 3m: the strip y in [8, 24). Agent 0 at (10, 16) probes (10, 17), (10, 15), (11, 16),
    # (9, 16): all pathable. Enemy 0 is 3 away (<= 6: attackable); enemies 1, 2 are 15 and
    # hypot(15, 4) = 15.5 away (>= 9: unseen). Agent 2 at (10, 19) is hypot(3, -3) = 4.243 from enemy 0.
    avail = [[0, 1, 1, 1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1, 0, 0]]
    d2 = np.sqrt(18.0)
    obs = {
        # move N S E W | enemy rows [attackable, dist/9, dx/9, dy/9, health/45] x3 | ally rows x2 | own
        0: [1, 1, 1, 1,
            1, 3 / 9, 3 / 9, 0 / 9, 30 / 45,  0, 0, 0, 0, 0,  0, 0, 0, 0, 0,
            0, 0, 0, 0, 0,  # agent 1 is dead
            1, 3 / 9, 0 / 9, 3 / 9, 22.5 / 45,  # agent 2, 3 cells north
            45 / 45],
        1: [0] * 30,  # dead agents observe nothing
        2: [1, 1, 1, 1,
            1, d2 / 9, 3 / 9, -3 / 9, 30 / 45,  0, 0, 0, 0, 0,  0, 0, 0, 0, 0,
            1, 3 / 9, 0 / 9, -3 / 9, 45 / 45,  # agent 0, 3 cells south
            0, 0, 0, 0, 0,  # agent 1 is dead
            22.5 / 45],
    }
    # state: allies [health/45, cooldown/15, (x-16)/32, (y-16)/32], enemies [health/45, (x-16)/32,
    # (y-16)/32], then the one-hot last actions
    state = ([1, 6 / 15, -6 / 32, 0 / 32] + [0, 0, 0, 0] + [0.5, 0 / 15, -6 / 32, 3 / 32]
             + [30 / 45, -3 / 32, 0 / 32] + [1, 9 / 32, 0 / 32] + [1, 9 / 32, 4 / 32]
             + list(np.eye(9)[[6, 0, 1]].ravel()))
    check_literal(env, ref, obs, state, avail)


def test_literal_3m_range_boundaries():
    """Shooting is inclusive at 6, sight strict at 9."""
    env = StarCraft2Env(map_name="3m")
    ref = make_reference(env)
    allies = [make_unit("marine", 10.0, 16.0, 45.0), make_unit("marine", 10.0, 10.0, 0.0),
              make_unit("marine", 10.0, 12.0, 0.0)]
    enemies = [make_unit("marine", 16.0, 16.0, 45.0),   # 6 away: attackable and seen
               make_unit("marine", 19.0, 16.0, 45.0),   # 9 away: unseen
               make_unit("marine", 16.5, 16.0, 9.0)]    # 6.5 away: seen, not attackable
    put(env, ref, allies, enemies)
    obs0 = ([1, 1, 1, 1]
            + [1, 6 / 9, 6 / 9, 0, 1] + [0, 0, 0, 0, 0] + [0, 6.5 / 9, 6.5 / 9, 0, 9 / 45]
            + [0] * 10 + [1])
    check_literal(env, ref, {0: obs0}, avail=[[0, 1, 1, 1, 1, 1, 1, 0, 0]] + [[1] + [0] * 8] * 2)


def test_literal_3s_vs_4z_with_shields():
    env = StarCraft2Env(map_name="3s_vs_4z")
    ref = make_reference(env)
    # interior positions: every probed cell lies in [3, 29)^2, pathable on any Agria grid
    allies = [make_unit("stalker", 8.0, 16.0, 60.0, shield=20.0, weapon_cooldown=14.0),
              make_unit("stalker", 8.0, 20.0, 80.0, shield=80.0),
              make_unit("stalker", 6.0, 16.0, 0.0, shield=40.0)]  # dead (a dead unit keeps its shield)
    enemies = [make_unit("zealot", 12.0, 13.0, 50.0, shield=25.0),   # hypot(4, -3) = 5 from agent 0
               make_unit("zealot", 14.0, 16.0, 100.0, shield=0.0),   # 6 from agent 0
               make_unit("zealot", 17.0, 16.0, 100.0, shield=50.0),  # 9 from agent 0: unseen
               make_unit("zealot", 9.0, 16.0, 0.0, shield=10.0)]     # dead
    put(env, ref, allies, enemies)
    avail = [[0, 1, 1, 1, 1, 1, 1, 1, 0, 0],
             [0, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # agent 1: enemy 0 at sqrt(65) = 8.06, enemy 1 at sqrt(52)
             [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
    s65, s52 = np.sqrt(65.0), np.sqrt(52.0)
    obs = {
        # enemy rows [attackable, dist/9, dx/9, dy/9, health/100, shield/50]
        # ally rows [visible, dist/9, dx/9, dy/9, health/80, shield/80]; own [health/80, shield/80]
        0: [1, 1, 1, 1,
            1, 5 / 9, 4 / 9, -3 / 9, 0.5, 0.5,  1, 6 / 9, 6 / 9, 0, 1.0, 0.0,  0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0,
            1, 4 / 9, 0, 4 / 9, 1.0, 1.0,  0, 0, 0, 0, 0, 0,
            60 / 80, 20 / 80],
        1: [1, 1, 1, 1,
            0, s65 / 9, 4 / 9, -7 / 9, 0.5, 0.5,  0, s52 / 9, 6 / 9, -4 / 9, 1.0, 0.0,
            0, 0, 0, 0, 0, 0,  0, 0, 0, 0, 0, 0,  # enemy 2 at sqrt(97) = 9.85; enemy 3 dead
            1, 4 / 9, 0, -4 / 9, 60 / 80, 20 / 80,  0, 0, 0, 0, 0, 0,
            1.0, 1.0],
        2: [0] * 42,
    }
    # allies [health/80, cooldown/35, (x-16)/32, (y-16)/32, shield/80],
    # enemies [health/100, (x-16)/32, (y-16)/32, shield/50], last actions all zero after a reset
    state = ([0.75, 14 / 35, -8 / 32, 0, 0.25] + [1, 0, -8 / 32, 4 / 32, 1] + [0] * 5
             + [0.5, -4 / 32, -3 / 32, 0.5] + [1, -2 / 32, 0, 0] + [1, 1 / 32, 0, 1] + [0] * 4
             + [0] * 30)
    check_literal(env, ref, obs, state, avail)


def test_literal_2s3z_unit_type_bits_are_swapped_for_enemies():
    env = StarCraft2Env(map_name="2s3z")
    ref = make_reference(env)
    assert env.ally_unit_names == ["stalker", "stalker", "zealot", "zealot", "zealot"]
    # enemy 0 is a zealot, enemy 1 a stalker wherever the simulator lists them
    z, s = env.enemy_unit_names.index("zealot"), env.enemy_unit_names.index("stalker")
    allies = [make_unit(n, 10.0 + i, 16.0, 40.0, shield=10.0) for i, n in enumerate(env.ally_unit_names)]
    enemies = [make_unit(n, 25.0, 16.0, 0.0) for n in env.enemy_unit_names]  # all dead ...
    enemies[z] = make_unit("zealot", 12.0, 18.0, 50.0, shield=25.0)  # ... but these two
    enemies[s] = make_unit("stalker", 11.0, 18.0, 40.0, shield=40.0)
    put(env, ref, allies, enemies)
    obs = env.get_obs_agent(0)  # a stalker at (10, 16)
    nf = 4 + 2 + 2  # [attackable, dist, dx, dy, health, shield, type_0, type_1]
    zealot_row = obs[4 + z * nf: 4 + (z + 1) * nf]
    stalker_row = obs[4 + s * nf: 4 + (s + 1) * nf]
    # zealot at hypot(2, 2) = 2.83: [1, 2.83/9, 2/9, 2/9, 50/100, 25/50, 1, 0]  (id 73 - 73 = 0)
    np.testing.assert_array_equal(zealot_row, np.float32([1, np.sqrt(8.0) / 9, 2 / 9, 2 / 9, 0.5, 0.5, 1, 0]))
    # stalker at hypot(1, 2) = 2.24: [1, 2.24/9, 1/9, 2/9, 40/80, 40/80, 0, 1]  (id 74 - 73 = 1)
    np.testing.assert_array_equal(stalker_row,
                                  np.float32([1, np.sqrt(5.0) / 9, 1 / 9, 2 / 9, 0.5, 0.5, 0, 1]))
    # allies: stalker agent 1 is type 0, zealot agents 2..4 type 1 (RL ids from the smallest)
    allies_start = 4 + 5 * nf
    ally_rows = obs[allies_start: allies_start + 4 * nf].reshape(4, nf)
    np.testing.assert_array_equal(ally_rows[:, 6:], np.float32([[1, 0], [0, 1], [0, 1], [0, 1]]))
    # own [health/80, shield/80, type one-hot]: a stalker
    np.testing.assert_array_equal(obs[-4:], np.float32([0.5, 10 / 80, 1, 0]))
    # state rows put the type bits in the last two columns: allies [h, cd, x, y, shield, t0, t1]
    state = env.get_state()
    np.testing.assert_array_equal(state[0:7], np.float32([0.5, 0, -6 / 32, 0, 10 / 80, 1, 0]))
    np.testing.assert_array_equal(state[14:21], np.float32([0.4, 0, -4 / 32, 0, 10 / 50, 0, 1]))
    # enemies [h, x, y, shield, t0, t1]
    e0 = 5 * 7
    np.testing.assert_array_equal(state[e0 + 6 * z: e0 + 6 * (z + 1)],
                                  np.float32([0.5, -4 / 32, 2 / 32, 0.5, 1, 0]))
    np.testing.assert_array_equal(state[e0 + 6 * s: e0 + 6 * (s + 1)],
                                  np.float32([0.5, -5 / 32, 2 / 32, 0.5, 0, 1]))
    np.testing.assert_array_equal(env.get_state(), ref.get_state())


def test_literal_timestep_number_quirk():
    """SMAC reserves a zero slot in own_feats *and* appends t / limit: vectors are obs_size + 1 long."""
    env = StarCraft2Env(map_name="5m_vs_6m", obs_timestep_number=True, state_timestep_number=True)
    ref = make_reference(env, obs_timestep_number=True, state_timestep_number=True)
    allies = [make_unit("marine", 5.0 + i, 16.0, 45.0 if i else 0.0) for i in range(5)]
    enemies = [make_unit("marine", 28.0, 10.0 + i, 45.0) for i in range(6)]
    put(env, ref, allies, enemies, steps=14)
    assert env.get_obs_size() == 56 and env.get_state_size() == 99
    obs = env.get_obs()
    assert all(o.shape == (57,) for o in obs)
    # agent 1 at (6, 16): own health 45/45, the reserved slot 0, then 14 / 70 = 0.2
    np.testing.assert_array_equal(obs[1][-3:], np.float32([1.0, 0.0, 0.2]))
    # the dead agent 0 observes zeros except the appended timestep
    np.testing.assert_array_equal(obs[0], np.float32([0] * 56 + [0.2]))
    assert env.get_state()[-1] == np.float32(0.2)
    check_literal(env, ref, {i: ref.get_obs_agent(i) for i in range(5)}, ref.get_state())


def test_literal_pathing_grid_and_int_truncation_at_the_strip_corner():
    env = StarCraft2Env(map_name="5m_vs_6m", obs_pathing_grid=True)
    ref = make_reference(env, obs_pathing_grid=True)
    allies = [make_unit("marine", 0.5, 8.5, 45.0)] + [make_unit("marine", 20.0, 20.0, 0.0)] * 4
    enemies = [make_unit("marine", 30.0, 20.0, 45.0)] * 6
    put(env, ref, allies, enemies)
    # Move probes (half a move = 1 cell): N (int 0.5, int 9.5) = (0, 9) pathable; S (0, 7) below the
    # strip y in [8, 24); E (1, 8) pathable; W int(-0.5) = 0 (truncation, not floor) -> (0, 8) pathable.
    # Pathing points around (0, 8) with ma = 2: (0, 12) 1, (0, 4) 0, (4, 8) 1, (-4, 8) outside -> 1,
    # (2, 10) 1, (-2, 6) outside -> 1, (2, 6) 0, (-2, 10) outside -> 1.
    expected = [1, 0, 1, 1] + [1, 0, 1, 1, 1, 1, 0, 1]
    np.testing.assert_array_equal(env.get_obs_agent(0)[:12], np.float32(expected))
    np.testing.assert_array_equal(ref.get_obs_agent(0)[:12], np.float32(expected))
    assert env.get_avail_agent_actions(0) == [0, 1, 1, 0, 1, 1] + [0] * 6
