"""Demonstration datasets (components.demonstrations) and their recording pipeline (demo_pipeline, src/demos.py):
file round trip and every validation error, recording that is seeded and equals what the environment produced, the
four ablation styles' episode-to-agent mappings, mixed teams made of stack slices, checkpoint selection, the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import controllers
import demo_pipeline as dp
import envs
from alg_helpers import make_cfg
from components.demonstrations import (ARRAYS, FORMAT, OBS_FLAGS, VERSION, DemonstrationError, Demonstrations,
                                       _checksum, describe, episodes_digest, load_demonstrations,
                                       make_demonstrations, save_demonstrations, stored_checksum)
from runners.episode_runner import EpisodeRunner
from utils.checkpoint import save_checkpoint

DEMOS_CLI = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "demos.py")
N3 = 3  # agents on 3m


# --- helpers --------------------------------------------------------------------------------------------------

def sim_env_info(map_name="3m"):
    env = envs.REGISTRY["sc2"](n_envs=1, seed=0, map_name=map_name, backend="sim")
    try:
        return env.get_env_info()
    finally:
        env.close()


def make_checkpoint(models_dir, t_env, alg="ippo", map_name="3m", torch_seed=0, **overrides):
    """A minimal checkpoint as src/run.py writes it (config, env_info, loop, learner["mac"]), random weights."""
    cfg = make_cfg(alg, map_name, **overrides)
    info = sim_env_info(map_name)
    torch.manual_seed(torch_seed)
    mac = controllers.REGISTRY[cfg.mac](info, cfg, torch.device("cpu"))
    with torch.no_grad():  # make the policies far from uniform, so runs differ visibly
        for p in mac.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    payload = {"config": cfg.to_dict(), "env_info": info, "loop": {"t_env": t_env},
               "learner": {"mac": mac.state_dict()}}
    return save_checkpoint(os.path.join(str(models_dir), str(t_env)), payload)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three independent IPPO 'runs' on 3m with two checkpoints each, and one QMIX checkpoint."""
    root = tmp_path_factory.mktemp("models")
    models = []
    for r in range(3):
        d = root / f"ippo__3m__seed{r}"
        for j, t_env in enumerate((1000, 2000)):
            make_checkpoint(d, t_env, torch_seed=10 * r + j)
        models.append(str(d))
    qmix = make_checkpoint(root / "qmix__3m__seed0", 500, alg="qmix", torch_seed=99)
    return {"runs": models, "qmix": qmix, "root": root}


def ckpt_of(runs, r, t_env=2000):
    return os.path.join(runs["runs"][r], str(t_env), "checkpoint.pt")


def own_mac(path):
    """The checkpoint's controller exactly as training built it (its own config, no team code)."""
    ck = torch.load(path, weights_only=False)
    cfg = make_cfg(ck["config"]["name"], ck["config"]["env_args"]["map_name"])
    mac = controllers.REGISTRY[cfg.mac](ck["env_info"], cfg, torch.device("cpu"))
    mac.load_state_dict(ck["learner"]["mac"])
    return mac, cfg


def reference_episodes(mac, cfg, n_episodes, env_seed, batch_size):
    """Greedy episodes played by an EpisodeRunner, chunked as the recorder does: per episode (in order)
    obs [T, N, D] of the positions acted on, actions [T, N], and won."""
    b = min(batch_size, n_episodes)
    env = envs.REGISTRY["sc2"](n_envs=b, seed=env_seed, map_name="3m", backend="sim")
    runner = EpisodeRunner(env, mac, cfg, torch.device("cpu"))
    episodes = []
    while len(episodes) < n_episodes:
        batch, stats = runner.run(test_mode=True, t_env=0)
        for e in range(b):
            length = int(stats["ep_length"][e])
            episodes.append((batch.obs[e, :length].numpy(), batch.actions[e, :length].numpy(),
                             bool(stats["battle_won"][e])))
    env.close()
    return episodes[:n_episodes]


def assert_slot_episode(demos, i, k, episode):
    obs, actions, won = episode
    length = obs.shape[0]
    assert demos.lengths[i, k] == length
    np.testing.assert_array_equal(demos.obs[i, k, :length], obs[:, i])
    np.testing.assert_array_equal(demos.actions[i, k, :length], actions[:, i])
    assert not demos.obs[i, k, length:].any() and not demos.actions[i, k, length:].any()
    assert demos.won[i, k] == won


def synthetic(n=3, e=5, t=8, d=6, seed=0, map_name="3m"):
    """A small valid dataset with random contents (incompressible observations)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, size=(n, e)).astype(np.int64)
    lengths[0, 0] = t
    mask = np.arange(t)[None, None, :] < lengths[:, :, None]
    obs = (rng.standard_normal((n, e, t, d)) * mask[..., None]).astype(np.float32)
    actions = (rng.integers(0, 9, size=(n, e, t)) * mask).astype(np.int64)
    slots = [{"checkpoint": f"/x/{i}.pt", "run": "r", "t_env": 7, "agent": i, "learner": "ippo",
              "greedy_win_rate": 0.25} for i in range(n)]
    meta = {"format": FORMAT, "version": VERSION, "map_name": map_name, "n_agents": n, "n_actions": 9,
            "obs_dim": d, "episode_limit": 60, "obs_flags": dict(OBS_FLAGS), "backend": "sim", "style": "dm2",
            "n_episodes": e, "sampling": {"mode": "epsilon", "epsilon": 0.05}, "seed": 4, "slots": slots,
            "rollouts": [{"team": slots, "n_episodes": e}], "target_win_rate": 0.3,
            "win_rate": {"recorded": 0.4, "recorded_per_slot": [0.4] * n, "greedy_eval": [0.25] * n},
            "created": "2024-01-01T00:00:00+00:00", "dm2_commit": None, "nested": {"unicode": "ε²", "x": [1.5]}}
    return Demonstrations(obs=obs, actions=actions, lengths=lengths, won=rng.random((n, e)) < 0.5, meta=meta,
                          rollout=np.zeros((n, e), np.int64), episode=np.tile(np.arange(e), (n, 1)))


def rewrite_archive(src, dst, change):
    """Copy a dataset archive with ``change(arrays, meta)`` applied and a *valid* checksum, so that only the
    loader's semantic checks can catch the change."""
    with np.load(src, allow_pickle=False) as a:
        arrays = {name: a[name] for name in ARRAYS}
        meta = json.loads(str(a["meta"][()]))
    change(arrays, meta)
    meta_json = json.dumps(meta, sort_keys=True)
    with open(dst, "wb") as f:
        np.savez_compressed(f, meta=np.array(meta_json), checksum=np.array(_checksum(arrays, meta_json)), **arrays)


# --- format and I/O -------------------------------------------------------------------------------------------

def test_round_trip_keeps_every_array_and_metadata_field(tmp_path):
    demos = synthetic()
    path = save_demonstrations(str(tmp_path / "sub" / "d.npz"), demos)
    assert path == str(tmp_path / "sub" / "d.npz") and demos.path == path
    back = load_demonstrations(path)
    for name in ARRAYS:
        a, b = getattr(demos, name), getattr(back, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b)
    assert back.meta == demos.meta
    assert (back.n_agents, back.n_episodes, back.obs_dim, back.max_t) == (3, 5, 6, 8)
    assert back.step_mask().sum() == demos.lengths.sum()
    np.testing.assert_array_equal(back.slot_observations(1), demos.obs[1][demos.step_mask()[1]])
    with np.load(path, allow_pickle=False) as raw:  # plain NumPy, no pickles
        assert set(raw.files) == set(ARRAYS) | {"meta", "checksum"}
    assert not [f for f in os.listdir(tmp_path / "sub") if f != "d.npz"]  # no temp file left


def test_make_demonstrations_from_arrays(tmp_path):
    rng = np.random.default_rng(0)
    d = make_demonstrations(rng.standard_normal((2, 3, 4, 5)), [[4, 2, 1], [3, 3, 4]], map_name="2m_vs_1z",
                            n_actions=7, episode_limit=10, won=[[1, 0, 0], [0, 0, 1]],
                            env_args={"obs_last_action": True}, seed=11)
    assert not d.obs[0, 1, 2:].any() and d.meta["seed"] == 11 and d.meta["obs_flags"]["obs_last_action"]
    back = load_demonstrations(save_demonstrations(str(tmp_path / "m.npz"), d))
    np.testing.assert_array_equal(back.obs, d.obs)
    np.testing.assert_array_equal(back.won, d.won)
    assert back.meta == d.meta and "custom demonstrations on 2m_vs_1z" in describe(back)
    back.check_compatible("2m_vs_1z", {"n_agents": 2, "obs_shape": 5}, {"obs_last_action": True})


def test_episodes_digest_compares_the_episodes_not_the_provenance(tmp_path):
    """The same episodes saved at another time, path and commit: same episodes digest, different stored checksum
    (it covers the metadata); one changed observation changes the digest."""
    rng = np.random.default_rng(0)
    d = make_demonstrations(rng.standard_normal((2, 3, 4, 5)), [[4, 2, 1], [3, 3, 4]], map_name="2m_vs_1z",
                            n_actions=7, episode_limit=10, seed=11)
    first = save_demonstrations(str(tmp_path / "a.npz"), d)
    d.meta["created"] = "2030-01-01T00:00:00+00:00"
    second = save_demonstrations(str(tmp_path / "b.npz"), d)
    assert stored_checksum(first) != stored_checksum(second)
    a, b = load_demonstrations(first), load_demonstrations(second)
    assert episodes_digest(a) == episodes_digest(b) and episodes_digest(a) in describe(a)
    b.obs[1, 0, 0, 0] += 1.0
    assert episodes_digest(a) != episodes_digest(b)


def test_overwrite_is_refused(tmp_path):
    path = save_demonstrations(str(tmp_path / "d.npz"), synthetic(seed=1))
    before = open(path, "rb").read()
    with pytest.raises(DemonstrationError, match=r"d\.npz already exists; refusing to overwrite"):
        save_demonstrations(path, synthetic(seed=2))
    assert open(path, "rb").read() == before


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(DemonstrationError, match=r"nope\.npz does not exist"):
        load_demonstrations(str(tmp_path / "nope.npz"))
    text = tmp_path / "t.npz"
    text.write_text("hello")
    with pytest.raises(DemonstrationError, match=r"t\.npz is not a demonstrations file"):
        load_demonstrations(str(text))
    other = tmp_path / "o.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(DemonstrationError, match=r"o\.npz is a NumPy archive but lacks the 'meta' array"):
        load_demonstrations(str(other))


def test_truncated_file(tmp_path):
    path = save_demonstrations(str(tmp_path / "d.npz"), synthetic(e=40, t=30, d=20))
    data = open(path, "rb").read()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DemonstrationError, match=r"cut\.npz is truncated or corrupt"):
        load_demonstrations(str(cut))


@pytest.mark.parametrize("where", [0.3, 0.5, 0.7])
def test_corrupt_file_bytes_flipped_in_the_middle(tmp_path, where):
    path = save_demonstrations(str(tmp_path / "d.npz"), synthetic(e=40, t=30, d=20))
    data = bytearray(open(path, "rb").read())
    assert len(data) > 40_000
    mid = int(len(data) * where)
    data[mid: mid + 4096] = bytes(b ^ 0x5A for b in data[mid: mid + 4096])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DemonstrationError, match=r"bad\.npz .*corrupt"):
        load_demonstrations(str(bad))


def test_stored_checksum_catches_what_the_zip_does_not(tmp_path):
    path = save_demonstrations(str(tmp_path / "d.npz"), synthetic())
    with np.load(path, allow_pickle=False) as a:
        members = {name: a[name] for name in a.files}
    members["obs"] = members["obs"].copy()
    members["obs"][0, 0, 0, 0] += 1.0  # a valid archive (fresh CRCs) whose content changed
    forged = tmp_path / "forged.npz"
    with open(forged, "wb") as f:
        np.savez_compressed(f, **members)
    with pytest.raises(DemonstrationError, match=r"forged\.npz is corrupt: its contents do not match the checksum"):
        load_demonstrations(str(forged))


def test_newer_version_and_inconsistent_shapes(tmp_path):
    path = save_demonstrations(str(tmp_path / "d.npz"), synthetic())
    newer = tmp_path / "newer.npz"
    rewrite_archive(path, newer, lambda arrays, meta: meta.update(version=VERSION + 1))
    with pytest.raises(DemonstrationError, match=rf"newer\.npz has format version {VERSION + 1}, newer than this "
                                                 rf"code reads \(version {VERSION}\); update dm2"):
        load_demonstrations(str(newer))
    shapes = tmp_path / "shapes.npz"
    rewrite_archive(path, shapes, lambda arrays, meta: arrays.update(lengths=arrays["lengths"][:, :-1]))
    with pytest.raises(DemonstrationError, match=r"shapes\.npz: array 'lengths' has shape \(3, 4\) but 'obs' "
                                                 r"\(3, 5, 8, 6\) implies \(3, 5\)"):
        load_demonstrations(str(shapes))
    agents = tmp_path / "agents.npz"
    rewrite_archive(path, agents, lambda arrays, meta: meta.update(n_agents=4))
    with pytest.raises(DemonstrationError, match=r"metadata says n_agents=4 but the arrays have n_agents=3"):
        load_demonstrations(str(agents))
    padding = tmp_path / "padding.npz"

    def dirty_padding(arrays, meta):
        arrays["obs"] = arrays["obs"].copy()
        arrays["obs"][1, 1, -1] = 1.0 if arrays["lengths"][1, 1] < arrays["obs"].shape[2] else 0.0
        arrays["lengths"] = arrays["lengths"].copy()
        arrays["lengths"][1, 1] = 1
    rewrite_archive(path, padding, dirty_padding)
    with pytest.raises(DemonstrationError, match=r"not zero after the episodes' ends"):
        load_demonstrations(str(padding))


def test_check_compatible_names_both_values():
    demos = synthetic(n=3, d=30)
    info = {"n_agents": 3, "obs_shape": 30}
    demos.check_compatible("3m", info, {"obs_all_health": True})  # matches (unset flags: SMAC's defaults)
    with pytest.raises(DemonstrationError, match=r"recorded on map '3m' but this run uses map '5m_vs_6m'"):
        demos.check_compatible("5m_vs_6m", info, {})
    with pytest.raises(DemonstrationError, match=r"n_agents=3 but this run's environment has n_agents=5"):
        demos.check_compatible("3m", {"n_agents": 5, "obs_shape": 30}, {})
    with pytest.raises(DemonstrationError, match=r"obs_dim=30 but this run's environment has obs_shape=42"):
        demos.check_compatible("3m", {"n_agents": 3, "obs_shape": 42}, {})
    for flag, default in OBS_FLAGS.items():
        if flag == "obs_own_health":  # forced on by obs_all_health, as in SMAC
            args = {"obs_all_health": False, "obs_own_health": False}
            msg = r"env_args.obs_all_health=True but this run uses env_args.obs_all_health=False"
        else:
            args = {flag: not default}
            msg = rf"env_args.{flag}={default} but this run uses env_args.{flag}={not default}"
        with pytest.raises(DemonstrationError, match=msg):
            demos.check_compatible("3m", info, args)


# --- recording -------------------------------------------------------------------------------------------------

def test_recording_is_seeded_and_equals_what_the_env_produced(runs):
    path = ckpt_of(runs, 0)
    kw = dict(batch_size=4)
    a = dp.record_demonstrations(path, 6, "stochastic", None, 5, **kw)
    b = dp.record_demonstrations(path, 6, "stochastic", None, 5, **kw)
    c = dp.record_demonstrations(path, 6, "stochastic", None, 6, **kw)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.actions[:, :, :5], c.actions[:, :, :5])
    a.validate()
    # greedy: exactly the EpisodeRunner's episodes with the checkpoint's own controller and the same env seed
    greedy = dp.record_demonstrations(path, 6, "greedy", None, 5, **kw)
    mac, cfg = own_mac(path)
    ref = reference_episodes(mac, cfg, 6, dp.derive_seed(5, 0, 0), 4)
    for i in range(N3):
        for k in range(6):
            assert_slot_episode(greedy, i, k, ref[k])
    assert greedy.max_t == greedy.lengths.max()
    m = greedy.meta
    assert m["map_name"] == "3m" and m["n_agents"] == N3 and m["obs_dim"] == sim_env_info()["obs_shape"]
    assert m["n_actions"] == 9 and m["episode_limit"] == sim_env_info()["episode_limit"] and m["backend"] == "sim"
    assert m["sampling"] == {"mode": "greedy", "epsilon": None} and m["seed"] == 5 and m["style"] == "dm2"
    assert m["obs_flags"] == {**OBS_FLAGS, "obs_own_health": True}
    assert [s["agent"] for s in m["slots"]] == [0, 1, 2]
    assert {s["checkpoint"] for s in m["slots"]} == {os.path.abspath(path)} and m["slots"][0]["t_env"] == 2000
    assert m["win_rate"]["recorded"] == greedy.won.mean() and m["rollouts"][0]["batch_size"] == 4
    assert m["created"] and "dm2_commit" in m and m["recipe"]["style"] == "dm2"
    # the observations acted on: the first is the env's start observation (the runner resets once more)
    env = envs.REGISTRY["sc2"](n_envs=4, seed=dp.derive_seed(5, 0, 0), map_name="3m", backend="sim")
    env.reset()
    np.testing.assert_array_equal(greedy.obs[:, :4, 0], env.get_obs().transpose(1, 0, 2))
    env.close()


def test_epsilon_sampling_and_qmix_checkpoints(runs):
    qmix = runs["qmix"]
    with pytest.raises(DemonstrationError, match=r"Q-values .* use sampling 'greedy' or 'epsilon'"):
        dp.record_demonstrations(qmix, 4, "stochastic", batch_size=4)
    with pytest.raises(DemonstrationError, match=r"needs an epsilon in \[0, 1\]"):
        dp.record_demonstrations(qmix, 4, "epsilon", None, batch_size=4)
    greedy = dp.record_demonstrations(qmix, 4, "greedy", None, 1, batch_size=4)
    mac, cfg = own_mac(qmix)
    ref = reference_episodes(mac, cfg, 4, dp.derive_seed(1, 0, 0), 4)
    for k in range(4):
        assert_slot_episode(greedy, 2, k, ref[k])
    eps0 = dp.record_demonstrations(qmix, 4, "epsilon", 0.0, 1, batch_size=4)
    np.testing.assert_array_equal(eps0.actions, greedy.actions)
    eps = dp.record_demonstrations(qmix, 4, "epsilon", 0.5, 1, batch_size=4)
    assert eps.meta["sampling"] == {"mode": "epsilon", "epsilon": 0.5}
    assert not np.array_equal(eps.actions[:, :, :3], greedy.actions[:, :, :3])


def test_mixed_team_is_stack_slices_of_each_checkpoint(runs):
    paths = [ckpt_of(runs, r) for r in range(3)]
    ckpts = [dp.load_policy(p) for p in paths]
    team = dp.Team(ckpts)
    state = team.agent_state()
    for key, value in state.items():
        for i in range(N3):
            assert torch.equal(value[i], ckpts[i].agent_state[key][i]), key
    # functionally: slot i of the team computes what checkpoint i's own controller computes for agent i
    mixed = team.build_mac()
    own = [own_mac(p)[0] for p in paths]
    torch.manual_seed(0)
    obs = torch.randn(4, N3, ckpts[0].env_info["obs_shape"])
    last = torch.randint(0, 9, (4, N3))
    h = mixed.init_hidden(4)
    out = mixed.forward(mixed.build_inputs(obs[:, None], last[:, None]), h)[0]
    for i in range(N3):
        ref = own[i].forward(own[i].build_inputs(obs[:, None], last[:, None]), h)[0]
        torch.testing.assert_close(out[i], ref[i], rtol=0, atol=0)
    # a shared-parameter checkpoint contributes its one network to its slot
    shared = make_checkpoint(runs["root"] / "shared", 10, torch_seed=7, agent_parameter_sharing=True)
    st = dp.Team([ckpts[0], dp.load_policy(shared), ckpts[2]]).agent_state()
    assert torch.equal(st["fc1.weight"][1], dp.load_policy(shared).agent_state["fc1.weight"][0])


def test_teams_must_share_map_and_architecture(runs, tmp_path):
    a = dp.load_policy(ckpt_of(runs, 0))
    other_map = dp.load_policy(make_checkpoint(tmp_path / "m", 1, map_name="3s_vs_3z"))
    with pytest.raises(DemonstrationError, match=r"Cannot form a team .*map '3m' vs '3s_vs_3z'"):
        dp.Team([a, a, other_map])
    wide = dp.load_policy(make_checkpoint(tmp_path / "w", 1, hidden_dim=32))
    with pytest.raises(DemonstrationError, match=r"Cannot form a team .*hidden_dim 64 vs 32"):
        dp.Team([a, wide, a])
    with pytest.raises(DemonstrationError, match=r"Cannot form a team .*agent 'ln_rnn' vs 'rnn'"):
        dp.Team([a, a, dp.load_policy(runs["qmix"])])
    with pytest.raises(DemonstrationError, match=r"needs 3 independently trained runs on '3m' .* but 2 "
                                                 r"checkpoint\(s\) were given"):
        dp.plan_style("neither", [ckpt_of(runs, 0), ckpt_of(runs, 1)], 2)
    with pytest.raises(DemonstrationError, match=r"checkpoints of 3 different runs"):
        dp.plan_style("concurrent_not_cotrained", [ckpt_of(runs, 0), ckpt_of(runs, 0, 1000), ckpt_of(runs, 1)], 2)


# --- the four styles ---------------------------------------------------------------------------------------------

K = 3
B = 2  # chunked: several runner calls per rollout


@pytest.fixture(scope="module")
def refs(runs):
    """Greedy reference episodes from each run's own controller (the style with seed 0 uses env seed
    derive_seed(0, 0, r) for rollout r)."""
    out = {}
    for r in range(3):
        mac, cfg = own_mac(ckpt_of(runs, r))
        out[r] = reference_episodes(mac, cfg, N3 * K, dp.derive_seed(0, 0, r), B)
    # the mapping checks below are only meaningful if every episode (and every run's) is distinguishable
    episodes = [ep[0] for r in out for ep in out[r]]
    for x in range(len(episodes)):
        for y in range(x):
            assert episodes[x].shape != episodes[y].shape or not np.array_equal(episodes[x], episodes[y])
    return out


def build(style, ckpts):
    return dp.build_demonstrations(style, ckpts, K, "greedy", None, 0, batch_size=B)


def test_style_dm2(runs, refs):
    d = build("dm2", [ckpt_of(runs, 0)])
    assert d.obs.shape[:2] == (N3, K) and d.meta["style"] == "dm2" and len(d.meta["rollouts"]) == 1
    np.testing.assert_array_equal(d.rollout, 0)
    np.testing.assert_array_equal(d.episode, np.tile(np.arange(K), (N3, 1)))
    ref = reference_episodes(*own_mac(ckpt_of(runs, 0)), K, dp.derive_seed(0, 0, 0), B)
    for i in range(N3):
        for k in range(K):
            assert_slot_episode(d, i, k, ref[k])  # every slot: the same joint episodes 0..K-1
    np.testing.assert_array_equal(d.lengths[0], d.lengths[1])


def test_style_non_concurrent(runs, refs):
    d = build("non_concurrent", [ckpt_of(runs, 0)])
    assert d.obs.shape[:2] == (N3, K) and d.meta["rollouts"][0]["n_episodes"] == N3 * K
    np.testing.assert_array_equal(d.rollout, 0)
    np.testing.assert_array_equal(d.episode, [[K * i + k for k in range(K)] for i in range(N3)])
    for i in range(N3):
        for k in range(K):
            assert_slot_episode(d, i, k, refs[0][K * i + k])  # slot i: episodes [K*i, K*(i+1))
    assert {s["checkpoint"] for s in d.meta["slots"]} == {os.path.abspath(ckpt_of(runs, 0))}


def test_style_neither(runs, refs):
    paths = [ckpt_of(runs, r) for r in range(3)]
    d = build("neither", paths)
    assert len(d.meta["rollouts"]) == N3
    np.testing.assert_array_equal(d.rollout, np.tile(np.arange(N3)[:, None], (1, K)))
    np.testing.assert_array_equal(d.episode, np.tile(np.arange(K), (N3, 1)))
    for r in range(N3):  # rollout r: run r's own team
        assert [m["checkpoint"] for m in d.meta["rollouts"][r]["team"]] == [os.path.abspath(paths[r])] * N3
    for i in range(N3):
        assert d.meta["slots"][i]["checkpoint"] == os.path.abspath(paths[i]) and d.meta["slots"][i]["agent"] == i
        for k in range(K):
            assert_slot_episode(d, i, k, refs[i][k])  # slot i: agent i of run i's own team, episodes 0..K-1


def test_style_concurrent_not_cotrained(runs):
    paths = [ckpt_of(runs, r) for r in range(3)]
    d = build("concurrent_not_cotrained", paths)
    assert len(d.meta["rollouts"]) == 1
    assert [m["checkpoint"] for m in d.meta["rollouts"][0]["team"]] == [os.path.abspath(p) for p in paths]
    np.testing.assert_array_equal(d.rollout, 0)
    np.testing.assert_array_equal(d.episode, np.tile(np.arange(K), (N3, 1)))
    # reference: a controller whose stack i is copied by hand from run i's checkpoint
    mac, cfg = own_mac(paths[0])
    states = [torch.load(p, weights_only=False)["learner"]["mac"] for p in paths]
    mac.load_state_dict({key: torch.stack([states[i][key][i] for i in range(N3)]) for key in states[0]})
    ref = reference_episodes(mac, cfg, K, dp.derive_seed(0, 0, 0), B)
    for i in range(N3):
        for k in range(K):
            assert_slot_episode(d, i, k, ref[k])


# --- evaluation and selection --------------------------------------------------------------------------------------

def ev(t_env, win_rate):
    return dp.Evaluation(t_env=t_env, win_rate=win_rate, mean_return=0.0, mean_length=0.0, episodes=1, seed=0,
                         backend="sim", checkpoint=f"/c/{t_env}", seconds=0.0, evaluated_at="")


def test_select_picks_the_nearest_win_rate():
    table = [ev(100, 0.0), ev(200, 0.22), ev(300, 0.36), ev(400, 0.48), ev(500, 0.55), ev(600, 0.52)]
    assert dp.select_checkpoint(table, 0.3).t_env == 300
    assert dp.select_checkpoint(table, 0.5).t_env == 400  # 0.48 and 0.52 tie: the earlier
    assert dp.select_checkpoint(table, 1.0).t_env == 500
    with pytest.raises(DemonstrationError, match="target win rate must be in"):
        dp.select_checkpoint(table, 1.5)


def test_evaluate_run_caches_its_table(runs, tmp_path, monkeypatch):
    table = dp.evaluate_run(runs["runs"][1], 4, 0, cache_dir=str(tmp_path), batch_size=4)
    assert [e.t_env for e in table] == [1000, 2000]
    direct = dp.evaluate_checkpoint(ckpt_of(runs, 1), 4, 0, batch_size=4)
    assert table[1].win_rate == direct.win_rate and table[1].mean_return == pytest.approx(direct.mean_return)
    csv_path = tmp_path / "ippo__3m__seed1.csv"
    assert csv_path.read_text().splitlines()[0] == ",".join(dp.EVAL_COLUMNS)

    def fail(*args, **kwargs):
        raise AssertionError("evaluated again")
    monkeypatch.setattr(dp, "evaluate_checkpoint", fail)
    again = dp.evaluate_run(runs["runs"][1], 4, 0, cache_dir=str(tmp_path))
    assert [(e.t_env, e.win_rate) for e in again] == [(e.t_env, e.win_rate) for e in table]


# --- command line ----------------------------------------------------------------------------------------------------

def cli(*args, cwd):
    return subprocess.run([sys.executable, DEMOS_CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_record(runs, tmp_path):
    out = tmp_path / "x.npz"
    args = ["record", runs["runs"][0], "--load-step", "1000", "--episodes", "4", "--sampling", "epsilon",
            "--epsilon", "0.1", "--seed", "3", "--out", str(out), "--batch-size", "4", "--eval-episodes", "2"]
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    d = load_demonstrations(str(out))
    assert d.obs.shape[:2] == (N3, 4) and d.meta["sampling"] == {"mode": "epsilon", "epsilon": 0.1}
    assert d.meta["slots"][0]["t_env"] == 1000 and d.meta["seed"] == 3
    assert all(isinstance(w, float) for w in d.meta["win_rate"]["greedy_eval"])
    assert "dm2 demonstrations on 3m" in proc.stdout and "rollout 1/1 (dm2): 4 episodes" in proc.stderr
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 2 and "already exists; refusing to overwrite" in again.stderr


def test_cli_pipeline(runs, tmp_path):
    out = tmp_path / "demos"
    args = ["pipeline", "--runs", *runs["runs"], "--targets", "0.3", "--out-dir", str(out), "--episodes", "2",
            "--eval-episodes", "2", "--batch-size", "4"]
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    files = {f"{s}_wr0.3.npz" for s in ("dm2", "non_concurrent", "concurrent_not_cotrained", "neither")}
    assert files | {"summary.json", "summary.md", "evaluations"} == set(os.listdir(out))
    summary = json.loads((out / "summary.json").read_text())
    assert {d["file"] for d in summary["datasets"]} == files and summary["skipped"] == []
    for r in runs["runs"]:
        sel = summary["evaluations"][os.path.normpath(r)]["selected"]["0.3"]
        wr = summary["evaluations"][os.path.normpath(r)]["win_rate_by_t_env"]
        assert abs(sel["win_rate"] - 0.3) == min(abs(w - 0.3) for w in wr.values())
    neither = load_demonstrations(str(out / "neither_wr0.3.npz"))
    assert neither.meta["target_win_rate"] == 0.3
    assert [s["run"] for s in neither.meta["slots"]] == [os.path.basename(r) for r in runs["runs"]]
    assert all(s["greedy_win_rate"] is not None for s in neither.meta["slots"])
    assert "| dm2_wr0.3.npz | dm2 | 0.3 |" in (out / "summary.md").read_text()
    # re-running evaluates nothing and records nothing; other settings are refused before any work
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 evaluated" in again.stderr and "rollout" not in again.stderr and "same recipe: kept" in again.stderr
    other = cli(*args[:-1], "2", "--seed", "9", cwd=tmp_path)
    assert other.returncode == 2 and "summary.json already exists" in other.stderr
    # with fewer runs than agents only the co-trained styles are possible
    two = cli("pipeline", "--runs", *runs["runs"][:2], "--targets", "0.5", "--out-dir", str(tmp_path / "two"),
              "--episodes", "2", "--eval-episodes", "2", "--batch-size", "4", "--styles", "neither", cwd=tmp_path)
    assert two.returncode == 2 and "needs 3 independently trained runs on 3m (n_agents=3), 2 given" in two.stderr
