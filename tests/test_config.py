"""Config layering, map_overrides, the read-only Config, and every rejected input (before any run starts)."""
import os
import pickle
import re
import textwrap
import time

import pytest
import yaml

import main
from config import resume
from config.loader import CONFIG_DIR, Config, ConfigError, available_configs, load_config
from utils import mongo


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))


@pytest.fixture
def config_dir(tmp_path):
    """A synthetic config folder in which every layer sets `marker` and a key of its own."""
    d = tmp_path / "cfg"
    write(d / "default.yaml", """
        name: ""
        seed: null
        env: toy
        env_args: {}
        marker: default
        from_env: default
        from_alg: default
        from_map: default
        from_user: default
        batch_size_run: 8
        test_nepisode: 4
        test_interval: 100
        log_interval: 100
        t_max: 1000
        save_model_interval: 100
        replay_nepisode: 1
        load_step: 0
        torch_threads: 0
        save_replay: false
        evaluate: false
        checkpoint_path: ""
        """)
    write(d / "learner_defaults.yaml", """
        lr: 5e-4          # scientific notation without a dot is a float
        epochs: 4
        flag: true
        """)
    write(d / "envs" / "toy.yaml", """
        marker: env
        from_env: env
        env_args:
          map_name: small
          size: 3
        """)
    write(d / "algs" / "alg.yaml", """
        marker: alg
        from_alg: alg
        epochs: 5
        map_overrides:
          small: {marker: map_small, from_map: small}
          big: {marker: map_big, from_map: big, env_args.size: 9}
        """)
    return d


def load(config_dir, overrides=None, alg="alg"):
    return load_config(alg, "toy", overrides, config_dir=config_dir, check_components=False)


def test_layering_order(config_dir):
    cfg = load(config_dir, {"from_user": "user"})
    assert (cfg.from_env, cfg.from_alg, cfg.from_map, cfg.from_user) == ("env", "alg", "small", "user")
    assert cfg.marker == "map_small"
    assert load(config_dir, {"marker": "user"}).marker == "user"  # `with` beats map_overrides
    assert cfg.epochs == 5 and cfg.lr == pytest.approx(5e-4) and isinstance(cfg.lr, float)
    assert cfg.name == "alg"  # empty name -> the --config name
    assert "map_overrides" not in cfg


def test_base_layer_comes_after_the_files_and_before_the_overrides(config_dir):
    """A resumed run's saved config (``base``) replaces what the files and map_overrides set; the overrides win
    over it; its map chooses the map_overrides; an unknown key in it is named with its label."""
    base = {"marker": "saved", "from_map": "saved", "epochs": 7, "env_args": {"map_name": "big"}}
    cfg = load_config("alg", "toy", {"epochs": 8}, config_dir=config_dir, check_components=False, base=base)
    assert (cfg.marker, cfg.from_map, cfg.from_alg, cfg.epochs, cfg.env_args["size"]) == ("saved", "saved", "alg", 8, 9)
    with pytest.raises(ConfigError, match=r"Unknown config key 'gone' in the checkpoint's config"):
        load_config("alg", "toy", config_dir=config_dir, check_components=False, base={"gone": 1},
                    base_label="the checkpoint's config")


def test_map_overrides_follow_the_final_map(config_dir):
    cfg = load(config_dir, {"env_args.map_name": "big"})
    assert cfg.marker == "map_big" and cfg.from_map == "big" and cfg.env_args["size"] == 9
    assert load(config_dir, {"env_args.map_name": "other"}).marker == "alg"
    assert load(config_dir, {"env_args": {"map_name": "big", "size": 4}}).env_args["size"] == 4


def test_map_overrides_are_validated_for_every_map(config_dir):
    with open(config_dir / "algs" / "alg.yaml", "a") as f:
        f.write("  huge: {epochz: 3}\n")
    with pytest.raises(ConfigError, match=r"'epochz' in map_overrides\['huge'\].*Did you mean 'epochs'"):
        load(config_dir)


def test_dotted_and_nested_overrides_agree(config_dir):
    assert load(config_dir, {"env_args.size": 5}) == load(config_dir, {"env_args": {"size": 5}})


def test_keys_declared_twice_are_rejected(config_dir):
    with open(config_dir / "learner_defaults.yaml", "a") as f:
        f.write("marker: again\n")
    with pytest.raises(ConfigError, match="'marker' is declared twice"):
        load(config_dir)


def test_config_is_read_only_and_picklable(config_dir):
    cfg = load(config_dir)
    with pytest.raises(AttributeError, match="read-only"):
        cfg.lr = 1.0
    with pytest.raises(TypeError):
        cfg.env_args["size"] = 1
    with pytest.raises(AttributeError, match="Did you mean 'epochs'"):
        cfg.epoch
    plain = cfg.to_dict()
    plain["env_args"]["size"] = 100
    assert cfg.env_args["size"] == 3
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert Config(cfg.to_dict()) == cfg


@pytest.mark.parametrize("overrides, message", [
    ({"epochz": 1}, r"Unknown config key 'epochz' in the overrides\. Did you mean 'epochs'\?"),
    ({"env_args.sise": 1}, r"Unknown config key 'env_args.sise'.*Did you mean 'env_args.size'.*Valid keys under "
                           r"'env_args': map_name, size"),
    ({"size": 1}, r"Unknown config key 'size'.*Did you mean 'env_args.size'"),
    ({"env_args.seed": 1}, r"seeded from the top-level `seed`"),
    ({"epochs": "many"}, r"'epochs' \(the overrides\) must be an integer, like its default 4; got str 'many'"),
    ({"epochs": 2.5}, r"'epochs' .* must be an integer"),
    ({"flag": "true"}, r"'flag' .* must be True or False.*capitalised"),
    ({"flag": 1}, r"'flag' .* must be True or False"),
    ({"lr": "fast"}, r"'lr' .* must be a number"),
    ({"marker": 3}, r"'marker' .* must be a string.*Quote it"),
    ({"env_args": 3}, r"'env_args' .* must be a mapping of its sub-keys \(map_name, size\)"),
    ({"batch_size_run": 0}, r"batch_size_run must be a positive integer; got 0 \(set by the overrides\)"),
    ({"t_max": -5}, r"t_max must be a positive integer"),
    ({"torch_threads": -1}, r"torch_threads must be 0 or a positive integer"),
    ({"seed": -1}, r"seed must be an integer in \[0, 4294967295\] or null"),
    ({"seed": "one"}, r"seed must be an integer"),
    ({"save_replay": True}, r"save_replay=True .* needs evaluate=True"),
    ({"replay_nepisode": 5, "evaluate": True}, r"replay_nepisode \(5\) cannot exceed test_nepisode \(4\)"),
    ({"checkpoint_path": "/nonexistent/models"}, r"checkpoint_path '/nonexistent/models' does not exist"),
])
def test_rejected_values(config_dir, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(config_dir, overrides)


def test_numbers_are_widened_and_integral_floats_narrowed(config_dir):
    cfg = load(config_dir, {"lr": 1, "t_max": 2e6})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.t_max == 2_000_000 and isinstance(cfg.t_max, int)


def test_unknown_config_names(config_dir):
    with pytest.raises(ConfigError, match=r"Unknown --config 'alq'\. Did you mean 'alg'\? Available: alg"):
        load_config("alq", "toy", config_dir=config_dir, check_components=False)
    with pytest.raises(ConfigError, match=r"Unknown --env-config 'tyo'.*Did you mean 'toy'"):
        load_config("alg", "tyo", config_dir=config_dir, check_components=False)


def test_real_configs_resolve():
    assert {"ippo", "qmix"} <= set(available_configs("algs")) and "sc2" in available_configs("envs")
    cfg = load_config("ippo", "sc2", {"env_args.map_name": "5m_vs_6m", "seed": 1})
    assert (cfg.ppo_epochs, cfg.ppo_clip, cfg.batch_size_run) == (10, 0.05, 256)  # paper's 5m_vs_6m settings
    assert cfg.env_args["backend"] in ("sim", "starcraft2")  # `auto` is recorded as the backend that runs
    assert load_config("ippo", "sc2", {"env_args.map_name": "5m_vs_6m", "batch_size_run": 8}).batch_size_run == 8
    assert load_config("qmix", "sc2").learner == "qmix"


@pytest.mark.parametrize("overrides, message", [
    ({"env_args.map_name": "4m"}, r"Unknown map '4m'\. The embedded simulator offers: .*3m"),
    ({"env_args.backend": "simulator"}, r"Unknown env_args.backend 'simulator'.*Valid backends: auto, sim, starcraft2"),
    ({"env_args.backend": "sim", "env_args.obs_terrain_height": True}, r"obs_terrain_height=True is not supported"),
    ({"learner": "ipo"}, r"Unknown learner 'ipo'.*Did you mean 'ippo'.*Registered in learners.REGISTRY"),
    ({"env": "sc3"}, r"Unknown env 'sc3'.*Did you mean 'sc2'"),
    ({"agent": "lnrnn"}, r"Unknown agent 'lnrnn'.*Did you mean 'ln_rnn'.*modules.agents.REGISTRY"),
])
def test_components_and_env_args_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("ippo", "sc2", overrides)


def test_declared_keys_have_comments():
    """Every key in default.yaml and envs/sc2.yaml is declared with a comment giving its meaning."""
    for name in ("default.yaml", os.path.join("envs", "sc2.yaml")):
        with open(os.path.join(CONFIG_DIR, name)) as f:
            lines = f.read().splitlines()
        keys = [line for line in lines if re.match(r"^\s*\w+:", line) and not line.strip().startswith("#")]
        assert keys, name
        undocumented = [line for line in keys if "#" not in line and not line.rstrip().endswith(":")]
        assert not undocumented, f"{name}: keys without a comment: {undocumented}"


# --- the command line -------------------------------------------------------------------------------------

def test_split_config_flags():
    # no --env-config: None (sc2 for a new run; a resumed run takes the checkpoint's)
    assert main.split_config_flags(["--config=ippo", "with", "a=1"]) == ("ippo", None, ["with", "a=1"])
    assert main.split_config_flags(["--env-config", "sc2", "--config", "qmix", "-u"]) == ("qmix", "sc2", ["-u"])
    sacred_args = ["-m", "localhost:27017:db", "with", "seed=1"]  # Sacred's own options are left untouched
    assert main.split_config_flags(["--config=ippo", *sacred_args]) == ("ippo", None, sacred_args)
    with pytest.raises(ConfigError, match="--config given twice"):
        main.split_config_flags(["--config=ippo", "--config=qmix"])
    with pytest.raises(ConfigError, match="--config needs a value"):
        main.split_config_flags(["--config"])


def test_with_config_files_come_before_key_value_updates(tmp_path):
    path = tmp_path / "upd.yaml"
    path.write_text(yaml.safe_dump({"t_max": 5, "env_args": {"map_name": "8m"}}))
    assert main.collect_updates([str(path), "t_max=7"]) == {"t_max": 7, "env_args": {"map_name": "8m"}}
    with pytest.raises(ConfigError, match="no named configs"):
        main.collect_updates(["fast"])


@pytest.mark.parametrize("args, message", [
    (["--config=ipo"], r"Unknown --config 'ipo'\. Did you mean 'ippo'"),
    (["--config=ippo", "--env-config=sc3"], r"Unknown --env-config 'sc3'"),
    ([], r"--config=<alg> is required \(or checkpoint_path=<models dir> to resume a run\)\. Available: .*ippo"),
    (["--config=ippo", "-m", "local:host:27017"], r"-m 'local:host:27017' is not a MongoDB observer spec: expected "
                                                  r"db_name, host:port or host:port:db_name"),
    (["--config=ippo", "with", "lrr=0.1"], r"Unknown config key 'lrr' in the command-line `with` updates\. Did you "
                                          r"mean 'lr'"),
    (["--config=ippo", "with", "batch_size_run=many"], r"'batch_size_run' .* must be an integer"),
    (["--config=ippo", "with", "env_args.backend=gpu"], r"Valid backends: auto, sim, starcraft2"),
    (["--config=ippo", "with", "env_args.map_name=3x"], r"Unknown map '3x'"),
    (["--config=ippo", "with", "checkpoint_path=nowhere"], r"checkpoint_path 'nowhere' does not exist"),
])
def test_command_line_rejects_before_sacred_starts(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        main.main(["main.py", *args])
    assert os.listdir(tmp_path) == []  # no results/ directory: nothing was started


def test_sacred_records_the_validated_values():
    cfg = load_config("ippo", "sc2", {"t_max": 2e6, "env_args": {"backend": "auto", "map_name": "8m"}})
    args = ["-m", "db", "with", "t_max=2e6", "env_args.backend=auto", "env_args.map_name=8m"]
    updates = ["t_max=2e6", "env_args.backend=auto", "env_args.map_name=8m"]
    assert main.canonical_sacred_args(args, updates, cfg) == [
        "-m", "db", "with", "t_max=2000000", f"env_args.backend={cfg.env_args['backend']!r}",
        "env_args.map_name='8m'"]


def test_changeable_keys_are_documented_next_to_checkpoint_path():
    """default.yaml's comment on checkpoint_path lists exactly the keys config/resume.py lets a resume / an evaluation
    change."""
    text = open(os.path.join(CONFIG_DIR, "default.yaml")).read()
    comment = text[text.index("\ncheckpoint_path:"):text.index("\nload_step:")]
    entries, current = {}, None
    for line in (line.split("#", 1)[1] for line in comment.splitlines() if "#" in line):
        entry = re.match(r" {3}(\w+):(.*)", line)
        if entry:
            current = entry.group(1)
            entries[current] = entry.group(2)
        elif current and line.startswith(" " * 12):
            entries[current] += line
        else:
            current = None
    listed = {kind: [w for w in re.findall(r"[a-z_]+(?:\.[a-z_]+)?", re.sub(r"\(.*?\)", " ", entries[kind]))
                     if w not in ("the", "resume", "keys", "plus")] for kind in ("resume", "evaluate")}
    assert listed["resume"] == list(resume.RESUME_CHANGEABLE[2:])  # checkpoint_path and load_step go without saying
    assert listed["evaluate"] == list(resume.EVALUATE_CHANGEABLE[len(resume.RESUME_CHANGEABLE):])
    assert "gail_data_path" in comment and resume.DATA_KEYS == ("gail_data_path",)


def test_mongo_spec_parsing():
    assert mongo.parse_mongo_spec("localhost:27017:dm2") == {"url": "localhost:27017", "db_name": "dm2"}
    assert mongo.parse_mongo_spec("db.example.org:27018") == {"url": "db.example.org:27018"}
    assert mongo.parse_mongo_spec("dm2") == {"db_name": "dm2"}
    assert mongo.parse_mongo_spec("dm2.runs!5") == {"db_name": "dm2", "collection": "runs", "priority": 5}
    for bad in ("localhost:dm2:27017", "mongodb://localhost", ""):
        with pytest.raises(ConfigError, match="is not a MongoDB observer spec"):
            mongo.parse_mongo_spec(bad)


def test_unreachable_mongodb_is_a_clear_error_within_seconds(tmp_path, monkeypatch):
    """No MongoDB server here: the run stops before anything starts, within the few seconds of the check,
    naming the address and what to check (Sacred's own observer hangs for a minute, then two tracebacks)."""
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"-m localhost:27017:dm2: no MongoDB server answered at localhost:27017 "
                                          r"within 3 s \(.*\)\. Check the host and port, that mongod is running "
                                          r"there"):
        main.main(["main.py", "--config=ippo", "-m", "localhost:27017:dm2", "with", "t_max=1000"])
    assert time.monotonic() - start < 10
    assert os.listdir(tmp_path) == []
