"""Configs as data: presets as YAML files, the layer order, where each value came from, `config=FILE`,
and the one-line errors bad config input gets."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

import methods
from envs.tasks import TASKS
from experiments import config as config_module
from experiments.config import CONFIG_DIR, ConfigError, config_docs, render, resolve
from experiments.record import flatten
from methods import METHODS
from tests.fixtures.make_grid_configs import OUT as GRID_SNAPSHOT
from tests.fixtures.make_grid_configs import resolved_grid_configs
from tests.test_cli import TINY, assert_clean_error, run_cli

SUITE_TASK = {t.suite: name for name, t in reversed(TASKS.items())}  # one task per suite


def test_every_grid_run_resolves_exactly_as_before_configs_became_yaml():
    # The snapshot was taken with the Python-dict presets, before this module used OmegaConf and YAML files.
    before = json.loads(GRID_SNAPSHOT.read_text())
    now = json.loads(json.dumps(resolved_grid_configs()))
    assert sorted(now) == sorted(before)
    for run, cfg in before.items():  # as config.json writes them: 1 and 1.0 differ
        assert json.dumps(now[run], sort_keys=True) == json.dumps(cfg, sort_keys=True), run


def test_layers_apply_in_order_and_sources_say_which_set_each_value(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("scale: cpu\nalgo:\n  clip: 0.05\n  gamma: 0.98\ntrain: {eval_every: 7}\n")
    cfg, sources = resolve({"task": "hopper", "config": str(user), "algo.clip": 0.07})
    assert cfg.algo.clip == 0.07 and sources["algo.clip"] == "command line"  # command line over the file
    assert cfg.algo.gamma == 0.98 and sources["algo.gamma"] == str(user)
    assert cfg.train.eval_every == 7 and sources["train.eval_every"] == str(user)  # the file over cpu.yaml
    # scale=cpu from the user's file still selects the suite's cpu.yaml, which comes after the method's preset
    assert cfg.train.n_iterations == 25 and sources["train.n_iterations"].startswith("experiments/configs/gym/cpu")
    assert cfg.algo.clip_base == 0.01 and sources["algo.clip_base"] == "experiments/configs/gym/dppo.yaml"
    assert cfg.algo.vf_coef == 0.5 and sources["algo.vf_coef"] == "default"


def test_a_rendered_config_read_back_with_config_resolves_to_the_same_config(tmp_path):
    for overrides in (
        {"task": "hopper", "scale": "cpu", "policy.hidden": [128, 128], "algo.clip": 0.02, "train.n_steps": None},
        {"method": "gaussian_ppo", "task": "avoid_m1", "seed": 4, "pretrain.lr": 3e-4, "wandb.entity": "lab"},
    ):
        cfg, sources = resolve(overrides)
        path = tmp_path / "config.yaml"
        path.write_text(render(cfg, sources))
        again, again_sources = resolve({"config": str(path)})
        assert again.to_dict() == cfg.to_dict()
        assert set(again_sources.values()) == {str(path)}  # a full config: every key comes from the file


def test_show_config_prints_value_source_and_doc_and_reads_back(tmp_path):
    proc = run_cli("task=hopper", "scale=cpu", "algo.clip=0.02", "--show-config")
    assert proc.returncode == 0, proc.stderr
    lines = {line.strip().split(":")[0]: line for line in proc.stdout.splitlines()}
    assert "# command line | PPO clip range" in lines["clip"]
    assert "# experiments/configs/gym/cpu.yaml (scale=cpu) | Fine-tuning iterations" in lines["n_iterations"]
    assert "# experiments/configs/gym/dppo.yaml | " in lines["ft_denoising_steps"]
    assert lines["seed"].startswith("seed: 0  # default | Seed")
    shown = yaml.safe_load(proc.stdout)
    assert shown == resolve({"task": "hopper", "scale": "cpu", "algo.clip": 0.02})[0].to_dict()
    (tmp_path / "shown.yaml").write_text(proc.stdout)
    assert resolve({"config": str(tmp_path / "shown.yaml")})[0].to_dict() == shown


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_config_field_is_documented_where_it_is_declared(method):
    docs = config_docs(resolve({"method": method})[0])
    assert not [key for key, doc in docs.items() if not doc]


@pytest.mark.parametrize("suite", sorted(SUITE_TASK))
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("scale", ["paper", "cpu"])
def test_every_preset_file_loads_for_every_method_of_its_suite(suite, method, scale):
    cfg, sources = resolve({"method": method, "task": SUITE_TASK[suite], "scale": scale})
    preset = CONFIG_DIR / suite / f"{method}.yaml"
    if preset.is_file():  # every key of the file took effect, with the file as its source
        for key, value in flatten(yaml.safe_load(preset.read_text()) or {}).items():
            if scale == "paper" or not sources[key].endswith("(scale=cpu)"):
                assert sources[key] == f"experiments/configs/{suite}/{method}.yaml", key
                assert flatten(cfg.to_dict())[key] == value, key


@pytest.fixture
def preset_dir(tmp_path, monkeypatch):
    """A copy of the preset folder that a test may break."""
    copy = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, copy)
    monkeypatch.setattr(config_module, "CONFIG_DIR", copy)
    return copy


@pytest.mark.parametrize(
    "path, text, needles",
    [
        ("d3il/dppo.yaml", "algo:\n  clp: 0.1\n", ["d3il/dppo.yaml", "unknown config key 'algo.clp'", "algo.clip"]),
        ("d3il/dppo.yaml", "algo:\n  clip: wide\n", ["d3il/dppo.yaml", "algo.clip expects float, got 'wide'"]),
        ("d3il/dppo.yaml", "algo: [clip\n", ["d3il/dppo.yaml is not valid YAML"]),
        ("d3il/dppo.yaml", "- clip\n", ["d3il/dppo.yaml must be a mapping"]),
        ("d3il/drpo.yaml", "{}\n", ["d3il/drpo.yaml is not a preset", "dppo"]),
        ("robomimc/dppo.yaml", "{}\n", ["robomimc", "no task has"]),
    ],
)
def test_a_broken_preset_file_is_one_error_naming_file_key_and_fix(preset_dir, path, text, needles):
    (preset_dir / path).parent.mkdir(exist_ok=True)
    (preset_dir / path).write_text(text)
    with pytest.raises(ConfigError) as e:
        resolve({"method": "dppo", "task": "avoid_m2"})
    for needle in needles:
        assert needle in str(e.value)


def test_a_preset_key_the_method_does_not_have_is_refused_at_load_time(preset_dir):
    (preset_dir / "d3il" / "gaussian_ppo.yaml").write_text("algo:\n  ft_denoising_steps: 5\n")  # a DPPO key
    with pytest.raises(ConfigError) as e:
        resolve({"method": "gaussian_ppo", "task": "avoid_m2"})
    assert "gaussian_ppo.yaml: unknown config key 'algo.ft_denoising_steps'" in str(e.value)
    resolve({"method": "dppo", "task": "avoid_m2"})  # other methods' presets don't load it


@pytest.mark.parametrize(
    "text, args, needles",
    [
        (None, [], ["config file", "does not exist"]),
        ("train:\n  n_iteratons: 3\n", [], ["mine.yaml: unknown config key 'train.n_iteratons'", "train.n_iterations"]),
        ("train:\n  n_iterations: lots\n", [], ["mine.yaml: train.n_iterations expects int, got 'lots'"]),
        ("train: [\n", [], ["mine.yaml is not valid YAML"]),
        ("policy: 3\n", [], ["mine.yaml: policy is a section"]),
        ("method: dpo\n", [], ["mine.yaml: unknown method 'dpo'", "dppo"]),
        ("stage: fine\n", [], ["mine.yaml: stage must be one of pretrain, finetune, all, got 'fine'"]),
        ("scale: big\n", [], ["mine.yaml: scale must be one of paper, cpu"]),
        ("a: [1,\n  b: 2\n", [], ["mine.yaml is not valid YAML", "line 3, column 1"]),
        ("a: 1\na: 2\n", [], ["mine.yaml is not valid YAML (found duplicate key a at line 2"]),
        ("root:x:0:0:root:/root:/bin/bash\nbin:x:2:2:bin:/bin\n", [], ["mine.yaml must be a mapping"]),
        ("{}\n", ["config="], ["config= needs a path"]),
        ("{}\n", ["config=3"], ["config= needs a path", "got 3"]),
    ],
)
def test_a_bad_config_file_is_one_clear_error_and_nothing_starts(tmp_path, text, args, needles):
    user = tmp_path / "mine.yaml"
    if text is not None:
        user.write_text(text)
    results = tmp_path / "results"
    proc = run_cli(f"config={user}", f"results_dir={results}", *TINY, *args)
    assert_clean_error(proc, *needles)
    assert not results.exists()


def test_methods_do_not_import_the_task_layer():
    for path in Path(methods.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert "from envs" not in text and "import envs" not in text, path


@pytest.mark.parametrize(
    "arg, needles",
    [
        ("seed=${task}", ["seed expects int, got '${task}'"]),
        ("name=???", ["'???' is OmegaConf's missing-value marker"]),
        ("train.plot_rollouts=1", ["train.plot_rollouts expects bool, got 1"]),
        ("seed=true", ["seed expects int, got True"]),
        ("algo.ft_denoising_steps=50", ["algo.ft_denoising_steps must be in [1, 20]"]),
    ],
)
def test_values_omegaconf_would_misread_are_refused(arg, needles, tmp_path):
    proc = run_cli("method=dppo", "task=avoid_m2", f"results_dir={tmp_path}", *TINY, arg)
    assert_clean_error(proc, *needles)
    assert not list(tmp_path.iterdir())


def test_strings_are_taken_literally_and_read_back(tmp_path):
    odd = {"name": "a${task}", "wandb.project": "x: y # z ${", "wandb.entity": "'q'"}
    cfg, sources = resolve(odd)
    assert (cfg.name, cfg.wandb.project, cfg.wandb.entity) == ("a${task}", "x: y # z ${", "'q'")
    (tmp_path / "c.yaml").write_text(render(cfg, sources))
    assert resolve({"config": str(tmp_path / "c.yaml")})[0].to_dict() == cfg.to_dict()
