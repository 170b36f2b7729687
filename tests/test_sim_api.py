"""The simulator's interfaces: batched core vs single-env view, seeds, bad input, episode end, replays."""
import numpy as np
import pytest
from PIL import Image

from envs.sim import BatchedStarCraft2Sim, StarCraft2Env


def random_available(avail, rng):
    return np.argmax(rng.random(avail.shape) * avail, axis=-1)


def rollout(env, n_steps, seed=0):
    """Random available actions for ``n_steps``; returns everything the env produced."""
    rng = np.random.default_rng(seed)
    trace = []
    for _ in range(n_steps):
        actions = random_available(env.get_avail_actions(), rng)
        reward, terminated, info = env.step(actions)
        trace.append((env.get_obs(), env.get_state(), env.get_avail_actions(), reward, terminated,
                      {k: v.copy() for k, v in info.items()}))
        if terminated.all():
            break
    return trace


def assert_same_trace(a, b):
    assert len(a) == len(b)
    for sa, sb in zip(a, b):
        for xa, xb in zip(sa[:5], sb[:5]):
            np.testing.assert_array_equal(xa, xb)
        for k in sa[5]:
            np.testing.assert_array_equal(sa[5][k], sb[5][k])


def test_batched_shapes_and_dtypes():
    env = BatchedStarCraft2Sim("5m_vs_6m", n_envs=7, seed=0)
    assert env.get_obs().shape == (7, 5, 55) and env.get_obs().dtype == np.float32
    assert env.get_state().shape == (7, 98) and env.get_state().dtype == np.float32
    assert env.get_avail_actions().shape == (7, 5, 12)
    reward, terminated, info = env.step(random_available(env.get_avail_actions(), np.random.default_rng(0)))
    assert reward.shape == (7,) and reward.dtype == np.float32
    assert terminated.shape == (7,) and terminated.dtype == np.bool_
    assert set(info) == {"battle_won", "dead_allies", "dead_enemies", "episode_limit"}
    assert all(v.shape == (7,) for v in info.values())


def test_same_seed_same_trajectories_bit_for_bit():
    a = rollout(BatchedStarCraft2Sim("3s_vs_4z", n_envs=4, seed=11), 80)
    b = rollout(BatchedStarCraft2Sim("3s_vs_4z", n_envs=4, seed=11), 80)
    assert_same_trace(a, b)
    c = BatchedStarCraft2Sim("3s_vs_4z", n_envs=4, seed=12)
    assert not np.array_equal(c.get_obs(), BatchedStarCraft2Sim("3s_vs_4z", n_envs=4, seed=11).get_obs())


def test_each_environment_has_its_own_stream():
    env = BatchedStarCraft2Sim("3m", n_envs=3, seed=5)
    obs = env.get_obs()
    assert not np.array_equal(obs[0], obs[1]) and not np.array_equal(obs[1], obs[2])
    # env b's stream depends only on (seed, b), not on how many environments run beside it
    small = BatchedStarCraft2Sim("3m", n_envs=1, seed=5)
    np.testing.assert_array_equal(small.get_obs()[0], obs[0])


def test_single_env_view_agrees_with_the_batched_core():
    batched = BatchedStarCraft2Sim("5m_vs_6m", n_envs=3, seed=21)
    single = StarCraft2Env(map_name="5m_vs_6m", seed=21)
    batched.reset()
    obs, state = single.reset()
    rng = np.random.default_rng(1)
    for _ in range(70):
        np.testing.assert_array_equal(np.stack(obs), batched.get_obs()[0])
        np.testing.assert_array_equal(state, batched.get_state()[0])
        np.testing.assert_array_equal(np.array(single.get_avail_actions()), batched.get_avail_actions()[0])
        actions = random_available(batched.get_avail_actions(), rng)
        r_b, t_b, info_b = batched.step(actions)
        r_s, t_s, info_s = single.step(actions[0])
        assert r_s == pytest.approx(float(r_b[0]), abs=0) and t_s == t_b[0]
        assert info_s == {"battle_won": bool(info_b["battle_won"][0]),
                          "dead_allies": int(info_b["dead_allies"][0]),
                          "dead_enemies": int(info_b["dead_enemies"][0])}
        obs, state = single.get_obs(), single.get_state()
        if t_s:
            break
    assert t_s


def test_terminated_envs_are_frozen_until_reset():
    env = BatchedStarCraft2Sim("3m", n_envs=2, seed=0)
    rng = np.random.default_rng(0)
    while not env.terminated[0]:
        env.step(random_available(env.get_avail_actions(), rng))
    frozen_obs = env.get_obs()[0]
    if not env.terminated[1]:
        reward, terminated, _ = env.step(random_available(env.get_avail_actions(), rng))
        assert reward[0] == 0.0 and terminated[0]
        np.testing.assert_array_equal(env.get_obs()[0], frozen_obs)
    env.reset(np.array([True, False]))
    assert not env.terminated[0] and env.episode_steps[0] == 0


def test_timeout_and_continuing_episode_info():
    env = StarCraft2Env(map_name="3s_vs_3z", seed=0, continuing_episode=True)
    env.reset()
    # park every unit out of reach of each other so the episode can only time out
    env.set_unit_situation(allies={"x": [1.0, 1.0, 2.0], "y": [1.0, 3.0, 1.0]},
                           enemies={"x": [31.0, 31.0, 30.0], "y": [31.0, 29.0, 31.0],
                                    "cooldown": [1e9] * 3})
    env.batch.static[1][3:] = 0.0  # enemies stand still (speed 0)
    steps = 0
    while True:
        _, terminated, info = env.step([1, 1, 1])
        steps += 1
        if terminated:
            break
    assert steps == env.episode_limit == 150
    assert info == {"battle_won": False, "dead_allies": 0, "dead_enemies": 0, "episode_limit": True}
    stats = env.get_stats()
    assert stats["battles_game"] == 1 and stats["timeouts"] == 1 and stats["battles_draw"] == 1
    assert stats["win_rate"] == 0.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step([1, 1, 1])


def test_win_reward_and_scaling_follow_smac():
    env = StarCraft2Env(map_name="3m", seed=0)
    env.reset()
    env.set_unit_situation(allies={"x": [10.0, 30, 30], "y": [16.0, 16, 18], "health": [45, 0, 0]},
                           enemies={"x": [13.0, 30, 30], "y": [16.0, 10, 12], "health": [6.0, 0, 0],
                                    "cooldown": [1e9] * 3})
    reward, terminated, info = env.step([6, 0, 0])
    assert terminated and info["battle_won"]
    # 6 damage + 10 for the kill + 200 for the win, over max_reward / 20 (3*10 + 200 + 3*45 = 365)
    assert env.max_reward == 365
    assert reward == pytest.approx((6 + 10 + 200) / (365 / 20))


def test_sparse_and_unscaled_rewards():
    env = StarCraft2Env(map_name="3m", seed=0, reward_sparse=True, reward_scale=False)
    env.reset()
    env.set_unit_situation(allies={"x": [10.0, 30, 30], "y": [16.0, 16, 18], "health": [45, 0, 0]},
                           enemies={"x": [13.0, 30, 30], "y": [16.0, 10, 12], "health": [6.0, 0, 0],
                                    "cooldown": [1e9] * 3})
    assert env.step([6, 0, 0])[0] == 1.0


def test_negative_rewards_when_not_only_positive():
    env = StarCraft2Env(map_name="3m", seed=0, reward_only_positive=False, reward_scale=False)
    env.reset()
    env.set_unit_situation(allies={"x": [10.0, 30, 30], "y": [16.0, 16, 18], "health": [45, 0, 45]},
                           enemies={"x": [13.0, 30, 30], "y": [16.0, 10, 12], "health": [45.0, 0, 0]})
    env.batch.cooldown[0, 0] = 1e9  # the agent cannot fire; the enemy hits it once for 6
    reward, _, _ = env.step([1, 0, 1])
    assert reward == pytest.approx(-0.5 * 6.0)


# ---------------------------------------------------------------- bad input
def test_unknown_map_lists_the_available_ones():
    with pytest.raises(ValueError) as err:
        StarCraft2Env(map_name="5m_vs_7m")
    assert "5m_vs_6m" in str(err.value) and "3s_vs_4z" in str(err.value)


def test_unknown_and_unsupported_arguments():
    with pytest.raises(TypeError, match="did you mean 'obs_last_action'"):
        StarCraft2Env(map_name="3m", obs_last_actions=True)
    with pytest.raises(ValueError, match="obs_terrain_height"):
        StarCraft2Env(map_name="3m", obs_terrain_height=True)
    with pytest.raises(ValueError, match="heuristic_ai must be True or False"):
        StarCraft2Env(map_name="3m", heuristic_ai="yes")
    with pytest.raises(ValueError, match="difficulty"):
        StarCraft2Env(map_name="3m", difficulty="11")
    with pytest.raises(ValueError, match="n_envs"):
        BatchedStarCraft2Sim("3m", n_envs=0)


def snapshot(env):
    return {k: getattr(env, k).copy() for k in ("x", "y", "health", "shield", "cooldown", "order", "target",
                                                  "episode_steps", "last_action", "avail")}


def test_unavailable_action_names_env_agent_action_and_valid_choices_without_side_effects():
    env = BatchedStarCraft2Sim("3m", n_envs=2, seed=0)
    before = snapshot(env)
    actions = np.ones((2, 3), dtype=np.int64)
    actions[1, 2] = 8  # attack enemy 2: out of range at the start
    with pytest.raises(ValueError) as err:
        env.step(actions)
    message = str(err.value)
    assert "env 1, agent 2: action 8 (attack enemy 2) is not available" in message
    assert "available actions: [1, 2, 3, 4, 5]" in message
    after = snapshot(env)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


@pytest.mark.parametrize("bad, error, match", [
    (np.ones((2, 2), dtype=np.int64), ValueError, r"shape \(2, 3\)"),
    (np.ones((2, 3), dtype=np.float32), TypeError, "integers"),
    (np.full((2, 3), 99), ValueError, "out of range"),
    (np.full((2, 3), -1), ValueError, "out of range"),
])
def test_wrong_action_shape_dtype_or_range(bad, error, match):
    env = BatchedStarCraft2Sim("3m", n_envs=2, seed=0)
    before = snapshot(env)
    with pytest.raises(error, match=match):
        env.step(bad)
    for k, v in snapshot(env).items():
        np.testing.assert_array_equal(before[k], v)
    env.step(np.ones((2, 3), dtype=np.int64))  # still usable


def test_single_env_rejects_unavailable_action_like_smac_but_explains():
    env = StarCraft2Env(map_name="3m", seed=0)
    env.reset()
    with pytest.raises(ValueError, match="env 0, agent 0: action 0 \\(no-op\\) is not available"):
        env.step([0, 1, 1])


# ---------------------------------------------------------------- state dict, replays
def test_state_dict_continues_the_random_streams():
    a = BatchedStarCraft2Sim("3m", n_envs=2, seed=3)
    rollout(a, 100)
    saved = a.state_dict()
    a.reset()
    expected = rollout(a, 100, seed=9)
    b = BatchedStarCraft2Sim("3m", n_envs=2, seed=999)
    b.load_state_dict(saved)
    b.reset()
    assert_same_trace(expected, rollout(b, 100, seed=9))


def test_save_replay_writes_an_animated_gif(tmp_path):
    env = StarCraft2Env(map_name="3m", seed=0, replay_dir=str(tmp_path), replay_prefix="demo")
    env.reset()
    rng = np.random.default_rng(0)
    steps = 0
    terminated = False
    while not terminated:
        _, terminated, _ = env.step(random_available(np.array(env.get_avail_actions()), rng))
        steps += 1
    path = env.save_replay()
    assert path.startswith(str(tmp_path)) and path.endswith(".gif") and "demo" in path
    with Image.open(path) as gif:
        assert gif.n_frames == steps + 1  # the start and every step
    assert env.render().shape[2] == 3


def test_batched_replay_requires_recording():
    env = BatchedStarCraft2Sim("3m", n_envs=2, seed=0)
    with pytest.raises(RuntimeError, match="record_replay=True"):
        env.save_replay()
