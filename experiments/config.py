"""A run's configuration: the dataclasses below (and each method's and policy's) as OmegaConf
structured configs, with presets as YAML files.

Each value comes from the last of these layers that sets it:

    1. the dataclass defaults (each field documented where it is declared)
    2. experiments/configs/<suite>/common.yaml     what every method of the suite shares (pre-training, envs)
    3. experiments/configs/<suite>/<method>.yaml   the method's preset, each value citing its reference config
    4. experiments/configs/<suite>/<task>/{common,<method>}.yaml   where the reference's values differ by task
    5. experiments/configs/<suite>/cpu.yaml, then <suite>/<task>/cpu.yaml    with scale=cpu
    6. config=FILE.yaml                            the user's own file (e.g. a run's recorded config.yaml)
    7. key=value on the command line

OmegaConf checks keys and types; this module turns its exceptions into one-line errors that name the
layer's file and the closest valid key, and remembers where each value came from (`--show-config`).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import itertools
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode, StringNode

from common.limits import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range, out_of_range
from common.names import UnknownNameError
from envs.tasks import TASKS, get_task
from experiments.record import flatten
from methods import METHODS, get_method
from methods.policies import POLICIES
from methods.pretrain import PretrainConfig

CONFIG_DIR = Path(__file__).resolve().with_name("configs")
REPO_ROOT = CONFIG_DIR.parents[1]


class ConfigError(ValueError):
    """A config key, value or file the user got wrong."""


@dataclass
class TrainConfig:
    n_iterations: int = 40
    """Fine-tuning iterations (one rollout and one update each)."""
    env_step_budget: int | None = None
    """Also stop once this many env steps are done (the last evaluation happens there); None: no budget."""
    n_envs: int = 50
    """Parallel training envs (evaluation uses min(n_envs, eval episodes))."""
    n_steps: int | None = None
    """Chunk steps per env per iteration; None: one episode (max episode steps / executed chunk length)."""
    reset_every_iteration: bool = True
    """Reset every env at the start of each iteration; false: episodes carry over between iterations."""
    eval_every: int = 10
    """Iterations between evaluations (0: only before and after fine-tuning)."""
    eval_episodes: int | None = None
    """Episodes per evaluation; None: the task's protocol (SPEC 5)."""
    save_every: int = 5
    """Iterations between resumable checkpoints (checkpoints/state.pt)."""
    snapshot_every: int = 0
    """Iterations between snapshots of the fine-tuned policy (checkpoints/policy_itr<N>.pt, for analysis); 0: none."""
    vector_env: str = "auto"
    """sync: envs step in this process; async: one subprocess per env; auto: async for the Robomimic tasks
    (robosuite steps ~50x slower than Gym) when this process may use more than one CPU, else sync."""
    video: bool = False
    """Record the first evaluation episode of each evaluation as MP4 (videos/; logged to wandb when enabled)."""
    video_size: int = 128
    """Video frame width and height in pixels."""
    plot_rollouts: bool = True
    """Plot the evaluation episodes of tasks that report paths (plots/rollouts_*.png)."""
    action_noise: list[float] = field(default_factory=lambda: [0.0, 0.0])
    """[low, high]: noise of magnitude ~ U(low, high) and random sign added to every executed action (normalised
    units) in rollouts and evaluations, a perturbed controller; [0, 0]: none (paper D.8: [0.1, 0.2])."""
    action_noise_start: int = 0
    """First fine-tuning iteration with action noise (paper D.8: 5); evaluating a checkpoint applies it in full."""
    action_noise_ramp: int = 0
    """Iterations over which the noise limits grow linearly from 0 to action_noise (paper D.8: 5); 0: at once."""
    init_range: float = 1.0
    """Scale of the half-width of the task's initial-state randomisation (envs/tasks.py widen_initial_states)."""

    LIMITS: ClassVar[dict[str, Range]] = {
        "n_iterations": AT_LEAST_ONE,
        "env_step_budget": AT_LEAST_ONE,
        "n_envs": AT_LEAST_ONE,
        "n_steps": AT_LEAST_ONE,
        "eval_every": NON_NEGATIVE,
        "eval_episodes": AT_LEAST_ONE,
        "save_every": AT_LEAST_ONE,
        "snapshot_every": NON_NEGATIVE,
        "video_size": Range(16, 2048),
        "action_noise": NON_NEGATIVE,
        "action_noise_start": NON_NEGATIVE,
        "action_noise_ramp": NON_NEGATIVE,
        "init_range": POSITIVE,
    }


@dataclass
class WandbConfig:
    enabled: bool = False
    """Log metrics to Weights & Biases (offline unless WANDB_API_KEY is set)."""
    project: str = "dppo-bench"
    """wandb project."""
    entity: str | None = None
    """wandb entity (team or user); None: your default."""


@dataclass
class RunConfig:
    method: str = "dppo"
    """Fine-tuning method (methods/__init__.py: METHODS)."""
    task: str = "avoid_m2"
    """Task (envs/tasks.py: TASKS); its suite picks the preset files."""
    seed: int = 0
    """Seed of pre-training and fine-tuning; evaluations use seed + 10000."""
    stage: str = "all"
    """pretrain: pre-train only; finetune: fine-tune checkpoint=; all: pre-train unless checkpoint=, then fine-tune."""
    scale: str = "paper"
    """paper: the reference's values; cpu: also the suite's 2-core preset (experiments/configs/<suite>/cpu.yaml)."""
    checkpoint: str | None = None
    """Pre-trained policy to fine-tune; None pre-trains one first."""
    pretrained: bool = True
    """false: fine-tune a randomly initialised policy, no pre-training (paper B.2, Fig. A6); the task's dataset
    gives only the observation and action normalisation."""
    dataset: str | None = None
    """Demonstrations for pre-training; None: the task's default (generated on first use)."""
    horizon: int | None = None
    """Ta predicted: the policy's action chunk length; None: the task's (SPEC 5)."""
    act_steps: int | None = None
    """Ta executed: how many of the chunk's actions the env runs per step; None: the horizon (the task's if unset)."""
    obs_keys: list[str] | None = None
    """Robomimic: the low-dim observation keys, in order; None: SPEC 5's (eef pos, eef quat, gripper qpos, object)."""
    device: str = "auto"
    """auto (cuda if available, else cpu), cpu, cuda or cuda:N."""
    threads: int = 1
    """Torch intra-op threads of the run."""
    results_dir: str = "results"
    """Directory that holds the run directory."""
    name: str | None = None
    """Run directory name under results_dir; None: <method>_<task>_s<seed> (pretrain_<kind>_... for stage=pretrain)."""
    progress: bool = True
    """Show progress bars."""
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    policy: Any = None
    """The policy's config (its class depends on the method's policy kind)."""
    algo: Any = None
    """The method's config (its class depends on the method)."""
    wandb: WandbConfig = field(default_factory=WandbConfig)

    LIMITS: ClassVar[dict[str, Range]] = {
        "seed": Range(0, 2**32 - 1),
        "threads": AT_LEAST_ONE,
        "horizon": AT_LEAST_ONE,
        "act_steps": AT_LEAST_ONE,
    }

    def task_spec(self):
        """The task, observing `obs_keys` where they are set, with the chunk sizes `horizon` and `act_steps`."""
        spec = get_task(self.task).with_obs_keys(self.obs_keys)
        if self.horizon is None and self.act_steps is None:
            return spec
        horizon = self.horizon or spec.horizon
        act_steps = self.act_steps or (horizon if self.horizon else spec.act_steps)
        if act_steps > horizon:
            raise ValueError(f"act_steps={act_steps} exceeds horizon={horizon}: a step executes part of the chunk")
        return dataclasses.replace(spec, horizon=horizon, act_steps=act_steps)

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        if self.stage == "pretrain":
            return f"pretrain_{get_method(self.method).policy_kind}_{self.task}_s{self.seed}"
        return f"{self.method}_{self.task}_s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


STAGES = ("pretrain", "finetune", "all")
SCALES = ("paper", "cpu")
VECTOR_ENVS = ("auto", "sync", "async")
CHOOSERS = ("method", "task", "scale")  # keys that decide which preset files apply
DEFAULT, COMMAND_LINE = "default", "command line"
PRESET_SOURCE = "experiments/configs/"  # how the source of a value a preset file set begins


# ------------------------------------------------------------------------------------------ parsing
def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`key=value` arguments as {dotted key: value}; values are read as YAML (`[256,256]`, `null`, `1e-3`)."""
    out = {}
    for a in args:
        if "=" not in a:
            raise ConfigError(f"expected key=value, got {a!r}")
        k, v = a.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v) if v != "" else None
        except yaml.YAMLError:
            out[k.strip()] = v
    return out


def display_path(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"found duplicate key {key}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file as dotted keys; a missing, unreadable or non-mapping file is a ConfigError.

    Values are typed when they are set (`set_key`), so `1e-3` (a string to YAML 1.1) becomes a float
    where the field is one, as it does on the command line."""
    if not isinstance(path, (str, Path)) or not str(path):
        raise ConfigError(f"config= needs a path to a YAML file, e.g. config=results/run/config.yaml; got {path!r}")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass config=path/to/file.yaml")
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{display_path(path)} is not valid YAML ({getattr(e, 'problem', None) or type(e).__name__}{where}); "
            "fix the file"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{display_path(path)} can't be read ({type(e).__name__}); pass a YAML file") from None
    if not isinstance(data, (dict, type(None))):
        raise ConfigError(f"{display_path(path)} must be a mapping of config keys (like `algo: {{clip: 0.1}}`)")
    return flatten(data or {})


# ------------------------------------------------------------------------------------------ presets
def check_preset_files() -> None:
    """Every preset directory is a known suite, each of its subfolders one of the suite's tasks, and every
    file a known method, `common.yaml` or `cpu.yaml`."""
    suites = {t.suite for t in TASKS.values()}
    for d in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir()):
        if d.name not in suites:
            raise ConfigError(
                f"{display_path(d)} is a preset folder for suite {d.name!r}, which no task has "
                f"(suites: {', '.join(sorted(suites))}); rename or remove it"
            )
        tasks = sorted(t.name for t in TASKS.values() if t.suite == d.name)
        for f in sorted(d.iterdir()):
            if f.is_dir() and f.name in tasks:
                _check_preset_folder(f)
            elif f.is_dir():
                raise ConfigError(
                    f"{display_path(f)} is not a task of suite {d.name!r} (tasks: {', '.join(tasks)}); "
                    "rename or remove it"
                )
        _check_preset_folder(d)


def _check_preset_folder(d: Path) -> None:
    for f in sorted(p for p in d.iterdir() if p.is_file()):
        if f.suffix != ".yaml" or (f.stem not in METHODS and f.stem not in ("common", "cpu")):
            raise ConfigError(
                f"{display_path(f)} is not a preset: files there are <method>.yaml "
                f"(methods: {', '.join(sorted(METHODS))}), common.yaml or cpu.yaml; rename or remove it"
            )


def preset_layers(suite: str, method: str, scale: str, task: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The preset files that apply, as (source label, dotted keys) in the order they apply: the suite's
    common.yaml and <method>.yaml, then the task's own (<suite>/<task>/common.yaml, <method>.yaml), then
    with scale=cpu the suite's and the task's cpu.yaml."""
    check_preset_files()
    folders = [CONFIG_DIR / suite] + ([CONFIG_DIR / suite / task] if task else [])
    paths = [(d / name, None) for d in folders for name in ("common.yaml", f"{method}.yaml")]
    if scale == "cpu":
        paths += [(d / "cpu.yaml", "scale=cpu") for d in folders]
    layers = []
    for path, why in paths:
        if path.is_file():
            label = display_path(path) + (f" ({why})" if why else "")
            layers.append((label, load_yaml(path)))
    return layers


# ------------------------------------------------------------------------------------------ resolving
def leaf_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k in node:
        v = node._get_node(k)
        keys += leaf_keys(v, f"{prefix}{k}.") if isinstance(v, DictConfig) else [f"{prefix}{k}"]
    return keys


def _expects(node) -> str:
    for cls, name in ((BooleanNode, "bool"), (IntegerNode, "int"), (FloatNode, "float"), (StringNode, "str")):
        if isinstance(node, cls):
            return name
    if isinstance(node, ListConfig):
        return "a list like [256,256]"
    return type(node).__name__


def set_key(root: DictConfig, key: str, value: Any, source: str) -> None:
    """Set one dotted key through OmegaConf's validation; errors name the layer that set it."""
    where = "" if source == COMMAND_LINE else f"{source.split(' (')[0]}: "
    node, parts = root, key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig) or part not in node:
            if isinstance(node, DictConfig):
                close = difflib.get_close_matches(key, leaf_keys(root), n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                shown = key if len(key) <= 80 else key[:77] + "..."
                raise ConfigError(
                    f"{where}unknown config key {shown!r}.{hint} "
                    "See the keys with: python -m experiments.run --show-config"
                )
            raise ConfigError(f"{where}{'.'.join(parts[:i])} is not a section")
        if i < len(parts) - 1:
            node = node[part]
    child = node._get_node(parts[-1])
    if isinstance(child, DictConfig):
        raise ConfigError(f"{where}{key} is a section; set one of its keys, e.g. {key}.<name>=...")
    strict_bool = isinstance(child, BooleanNode) and not isinstance(value, (bool, type(None)))
    bool_as_number = isinstance(child, (IntegerNode, FloatNode)) and isinstance(value, bool)
    interpolation = isinstance(value, str) and "${" in value and not isinstance(child, StringNode)
    if strict_bool or bool_as_number or interpolation:
        raise ConfigError(f"{where}{key} expects {_expects(child)}, got {value!r}")
    # numbers as the field declares them (YAML 1.1 reads 1e-3 as a string; OmegaConf warns when it converts)
    if isinstance(child, (FloatNode, IntegerNode)):
        value = _number(value, float if isinstance(child, FloatNode) else int)
    elif isinstance(child, ListConfig) and child._metadata.element_type in (float, int) and isinstance(value, list):
        value = [_number(v, child._metadata.element_type) for v in value]
    try:
        node[parts[-1]] = _literal(value, f"{where}{key}")
    except ValidationError:
        if value is None:
            raise ConfigError(f"{where}{key} cannot be null") from None
        raise ConfigError(f"{where}{key} expects {_expects(child)}, got {value!r}") from None


def _number(value: Any, tp: type) -> Any:
    """`value` as `tp` where that is exact (an int as a float, "1e-3" as a float, "3" as an int); else as given,
    for OmegaConf to refuse."""
    if isinstance(value, bool) or value is None:
        return value
    try:
        converted = tp(value) if isinstance(value, (str, int)) else value
    except ValueError:
        return value
    return converted if tp is float or not isinstance(value, str) or str(converted) == value.strip() else value


def _literal(value: Any, key: str) -> Any:
    """Values are taken as written: OmegaConf's `${...}` interpolation is escaped, its `???` marker refused."""
    if isinstance(value, list):
        return [_literal(v, key) for v in value]
    if isinstance(value, str):
        if value == "???":
            raise ConfigError(f"{key}: '???' is OmegaConf's missing-value marker, not a value; give a value")
        return value.replace("${", "\\${")
    return value


def _choose(key: str, layers: list[tuple[str, dict[str, Any]]]) -> tuple[str, str]:
    """The value of a key that picks presets, and a prefix naming the layer it came from for errors."""
    for source, values in reversed(layers):
        if key in values:
            return str(values[key]), "" if source == COMMAND_LINE else f"{source}: "
    return str(getattr(RunConfig, key)), ""


def _named(prefix: str, error: Exception) -> ConfigError:
    return ConfigError(f"{prefix}{error}")


def resolve(
    overrides: dict[str, Any], recorded: tuple[str, dict[str, Any]] | None = None
) -> tuple[RunConfig, dict[str, str]]:
    """The run's config from its layers, and where each dotted key's value came from.

    `recorded`: (label, dotted keys) applied after the presets and before `config=` (e.g. the config a
    checkpoint's run recorded)."""
    overrides = dict(overrides)
    late = [recorded] if recorded else []
    if "config" in overrides:
        path = overrides.pop("config")
        values = load_yaml(path)
        late.append((display_path(path), values))
    late.append((COMMAND_LINE, overrides))
    (method, method_src), (task, task_src), (scale, scale_src) = (_choose(k, late) for k in CHOOSERS)
    try:
        method_cls = get_method(method)
    except UnknownNameError as e:
        raise _named(method_src, e) from None
    try:
        spec = get_task(task)
    except UnknownNameError as e:
        raise _named(task_src, e) from None
    if scale not in SCALES:
        raise ConfigError(f"{scale_src}scale must be one of {', '.join(SCALES)}, got {scale!r}")

    policy_cfg = POLICIES[method_cls.policy_kind][1]()
    root = OmegaConf.structured(RunConfig(policy=policy_cfg, algo=method_cls.config_cls()))
    sources = dict.fromkeys(leaf_keys(root), DEFAULT)
    for source, values in [*preset_layers(spec.suite, method, scale, spec.name), *late]:
        for key, value in values.items():
            set_key(root, key, value, source)
            sources[key] = source
    try:
        cfg: RunConfig = OmegaConf.to_object(root)
    except OmegaConfBaseException as e:  # a safety net: set_key already refused what OmegaConf would
        raise ConfigError(f"config can't be resolved: {str(e).splitlines()[0]}") from None
    for key, value, rng in out_of_range_keys(cfg):
        prefix = "" if sources[key] in (COMMAND_LINE, DEFAULT) else f"{sources[key].split(' (')[0]}: "
        each = " (each)" if isinstance(value, list) else ""
        raise ConfigError(f"{prefix}{key}={_yaml_value(value)} is out of range: it must be {rng}{each}")
    noise = cfg.train.action_noise
    if len(noise) != 2 or noise[0] > noise[1]:
        raise ConfigError(f"train.action_noise must be [low, high] with low <= high, got {noise}")
    for key, allowed in (("stage", STAGES), ("train.vector_env", VECTOR_ENVS)):
        value = OmegaConf.select(root, key)
        if value not in allowed:
            prefix = "" if sources[key] in (COMMAND_LINE, DEFAULT) else f"{sources[key].split(' (')[0]}: "
            raise ConfigError(f"{prefix}{key} must be one of {', '.join(allowed)}, got {value!r}")
    if spec.robomimic is not None:
        from envs.robomimic import check_versions

        check_versions()  # before any env is built, possibly in a subprocess
    try:
        cfg.task_spec()
    except ValueError as e:
        raise ConfigError(str(e) if "act_steps" in str(e) else f"obs_keys: {e}") from None
    return cfg, sources


def out_of_range_keys(cfg: Any, prefix: str = "") -> list[tuple[str, Any, Range]]:
    """(dotted key, value, range) of every field outside the LIMITS its dataclass declares."""
    bad = [(prefix + name, value, rng) for name, value, rng in out_of_range(cfg)]
    for f in dataclasses.fields(cfg):
        if dataclasses.is_dataclass(getattr(cfg, f.name)):
            bad += out_of_range_keys(getattr(cfg, f.name), f"{prefix}{f.name}.")
    return bad


def build_config(overrides: dict[str, Any]) -> RunConfig:
    """The resolved config for dotted-key `overrides` (which may name a `config` file)."""
    return resolve(overrides)[0]


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from its `to_dict()` (a run record's config.json)."""
    return build_config(flatten(d))


# ------------------------------------------------------------------------------------------ showing
def field_docs(cls: type) -> dict[str, str]:
    """Each field's attribute docstring (the string right after its declaration), through the class's bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for stmt, nxt in itertools.pairwise(body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def config_docs(cfg: Any, prefix: str = "") -> dict[str, str]:
    """Dotted key -> the one-line doc of every leaf field of a (nested) config dataclass instance."""
    docs = field_docs(type(cfg))
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(config_docs(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = docs.get(f.name, "")
    return out


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def render(cfg: RunConfig, sources: dict[str, str] | None = None, with_docs: bool = True) -> str:
    """The config as YAML that `config=` reads back; each value commented with its source and its doc."""
    docs = config_docs(cfg) if with_docs else {}
    lines: list[str] = []

    def walk(obj: Any, prefix: str, indent: str) -> None:
        for f in dataclasses.fields(obj):
            value, key = getattr(obj, f.name), prefix + f.name
            if dataclasses.is_dataclass(value):
                lines.append(f"{indent}{f.name}:")
                walk(value, key + ".", indent + "  ")
                continue
            notes = [n for n in ((sources or {}).get(key), docs.get(key)) if n]
            comment = f"  # {' | '.join(notes)}" if notes else ""
            lines.append(f"{indent}{f.name}: {_yaml_value(value)}{comment}")

    walk(cfg, "", "")
    return "\n".join(lines) + "\n"
