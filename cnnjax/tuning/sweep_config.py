"""The `sweep` config block: its keys with their defaults, and their checks.

`sweep_problems` checks what the config alone decides (the keys' values, the
space's dimensions, the strategy and sampler against them) and is called by the
schema's `cnnjax.config.validate_config`, whatever the mode: a bad sweep block
is a bad config. `validate_sweep` adds what only a sweep needs when
`--mode=sweep` starts: a non-empty space, and the Optuna side (each dimension as
an Optuna distribution, the sampler's optional package). The study storage is
checked against the workdir in `run_sweep`.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from cnnjax.tuning import plans as plans_lib
from cnnjax.tuning import space as space_lib
from cnnjax.tuning import study as study_lib
from cnnjax.tuning.context import SweepError
from cnnjax.tuning.strategies import strategy_problems, strategy_space_problem


def sweep_defaults() -> ml_collections.ConfigDict:
    """The schema's `sweep` block (`--mode=sweep`; see `cnnjax.tuning.strategies`)."""
    s = ml_collections.ConfigDict()
    s.space = ml_collections.ConfigDict()  # e.g. space.optimizer.learning_rate = "loguniform(1e-3, 1)"
    s.space_extra = ""  # "path=spec; path=spec": dimensions added from the command line
    s.population_size = 16
    s.sampler = "random"  # random | grid | quasi_random | tpe | cmaes | gp (Optuna's, in rounds)
    s.storage = ""  # Optuna study storage; "" = sqlite:///WORKDIR/study.db (a URL or journal:PATH)
    s.study_name = ""  # "" = the workdir's name
    s.grid_points = 3
    s.strategy = "single"  # single | coarse_to_fine | successive_halving | hyperband | pbt
    s.seed = 0
    s.plan = "auto"  # auto | vmap | chunked | sequential
    s.chunk_size = config_dict.placeholder(int)
    s.shared_batches = False
    s.mesh_devices = 1  # shard the member axis over this many devices (0: all)
    s.rounds = 3  # coarse_to_fine; model-based samplers (tpe, cmaes, gp)
    s.top_k = 4  # coarse_to_fine
    s.eta = 2  # successive_halving, hyperband: keep 1/eta at each rung
    s.min_epochs = 1.0  # successive_halving, hyperband: first (smallest) rung
    s.pbt_interval_epochs = 1.0
    s.pbt_fraction = 0.25
    s.pbt_perturb = (0.8, 1.25)
    s.keep_best = 1  # the best members (on validation accuracy) written as run workdirs under best/
    return s


def read_space(config: ml_collections.ConfigDict) -> dict[str, space_lib.Distribution]:
    """`sweep.space` flattened, with the dimensions of `sweep.space_extra` added."""
    space = space_lib.flatten_space(config.sweep.space)
    for item in filter(None, (s.strip() for s in config.sweep.get("space_extra", "").split(";"))):
        if "=" not in item:
            raise SweepError(f"sweep.space_extra item {item!r}: expected PATH=SPEC")
        path, spec = (x.strip() for x in item.split("=", 1))
        space[path] = space_lib.parse_distribution(path, spec)
    return space


def sweep_problems(config: ml_collections.ConfigDict) -> list[str]:
    """What is wrong with the `sweep` block (empty when valid).

    The strategy's own keys are checked beside the strategies
    (`cnnjax.tuning.strategies.strategy_problems`, `strategy_space_problem`);
    a block without a space (a single run's) has only its keys checked.
    """
    if "sweep" not in config:
        return ["missing block(s) sweep: build the config on cnnjax.config.base_config()"]
    sweep = config.sweep
    errors = strategy_problems(sweep)
    samplers = space_lib.SAMPLER_CHOICES + study_lib.OPTUNA_SAMPLERS
    if sweep.sampler not in samplers:
        errors.append(f"sweep.sampler={sweep.sampler!r} is unknown; valid choices: {', '.join(samplers)}")
    if sweep.sampler in study_lib.OPTUNA_SAMPLERS and sweep.strategy != "single":
        errors.append(f"sweep.sampler={sweep.sampler!r} proposes each round's population itself: it runs with "
                      f"sweep.strategy='single' (sweep.rounds rounds), not {sweep.strategy!r}")
    if sweep.sampler in study_lib.OPTUNA_SAMPLERS and sweep.rounds < 1:
        errors.append(f"sweep.sampler={sweep.sampler!r} needs sweep.rounds >= 1, got {sweep.rounds}")
    if sweep.plan not in plans_lib.PLAN_CHOICES:
        errors.append(f"sweep.plan={sweep.plan!r} is unknown; valid choices: {', '.join(plans_lib.PLAN_CHOICES)}")
    if sweep.keep_best < 0:
        errors.append(f"sweep.keep_best must be >= 0 (0: keep no member's state), got {sweep.keep_best}")
    if sweep.population_size < 1:
        errors.append(f"sweep.population_size must be >= 1, got {sweep.population_size}")
    if sweep.chunk_size is not None and sweep.chunk_size < 1:
        errors.append(f"sweep.chunk_size must be >= 1, got {sweep.chunk_size}")
    if sweep.grid_points < 1:
        errors.append(f"sweep.grid_points must be >= 1, got {sweep.grid_points}")
    try:
        space = read_space(config)
        space_lib.check_paths(space, config)
    except (SweepError, space_lib.SpaceError) as err:
        return errors + [str(err)]
    if errors or not space:
        return errors  # the checks below read the keys above and a space
    problem = strategy_space_problem(config, space)
    if problem:
        return [problem]
    if sweep.sampler == "grid":
        try:
            space_lib.sample(space, "grid", sweep.population_size, grid_points=sweep.grid_points)
        except space_lib.SpaceError as err:
            return [str(err)]
    return []


def validate_sweep(config: ml_collections.ConfigDict) -> dict[str, space_lib.Distribution]:
    """Checks the sweep block for `--mode=sweep`; returns the flattened space.

    `SweepError` lists the problems of `sweep_problems`; then the space must be
    non-empty and the Optuna side must hold.
    """
    errors = sweep_problems(config)
    if errors:
        raise SweepError("Invalid sweep:\n  - " + "\n  - ".join(errors))
    space = read_space(config)
    if not space:
        raise SweepError("sweep.space is empty: give at least one dimension, e.g. "
                         "--config.sweep.space_extra='optimizer.learning_rate=loguniform(1e-3, 1)'")
    try:
        study_lib.distributions(space, propose=config.sweep.sampler in study_lib.OPTUNA_SAMPLERS)
        study_lib.check_sampler_available(config.sweep.sampler)
    except study_lib.StudyError as err:
        raise SweepError(str(err)) from None
    return space
