"""Optuna studies: model-based samplers in population batches, and trial storage.

Every sweep records its members as trials of an Optuna study (default
`sqlite:///WORKDIR/study.db`, study name the workdir's name), so it can be
inspected with `optuna-dashboard` and shared by several sweep commands. With
`sweep.sampler` one of `tpe`, `cmaes`, `gp`, Optuna also *proposes* the members:
each round asks for `sweep.population_size` trials at once (TPE with a constant
liar, so a batch spreads out), cnnjax trains them as one population and tells
Optuna each member's validation accuracy (diverged members as failed trials).

Space mapping: `uniform` -> float, `loguniform` -> float with `log=True`, `int`
-> int, `choice` -> categorical, `one_minus_loguniform` -> a log-uniform float
over 1 - value, stored under the name `1-PATH`. Trial user attributes hold the
member id, round, steps, workdir and the member's config values.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Iterable

from cnnjax.training import files
from cnnjax.tuning import space as space_lib

OPTUNA_SAMPLERS = ("tpe", "cmaes", "gp")


class StudyError(ValueError):
    """A study that cannot be opened or does not fit the sweep; raised before training."""


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def param_name(path: str, dist: space_lib.Distribution) -> str:
    return f"1-{path}" if dist.kind == "one_minus_loguniform" else path


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None)))


def distributions(space: dict[str, space_lib.Distribution], propose: bool = True) -> dict[str, Any]:
    """The Optuna distribution of each dimension, keyed by trial parameter name.

    A choice among values Optuna cannot store (tuples, lists) is an error when
    Optuna proposes the members (`propose`); when it only records them, the
    choices are stored as their `repr` strings.
    """
    optuna = _optuna()
    out = {}
    for path in sorted(space):
        dist = space[path]
        name = param_name(path, dist)
        if dist.kind == "uniform":
            out[name] = optuna.distributions.FloatDistribution(dist.low, dist.high)
        elif dist.kind == "loguniform":
            out[name] = optuna.distributions.FloatDistribution(dist.low, dist.high, log=True)
        elif dist.kind == "one_minus_loguniform":
            out[name] = optuna.distributions.FloatDistribution(1.0 - dist.high, 1.0 - dist.low, log=True)
        elif dist.kind == "int":
            out[name] = optuna.distributions.IntDistribution(int(dist.low), int(dist.high))
        elif dist.kind == "choice":
            bad = [v for v in dist.args if not _plain(v)]
            if bad and propose:
                raise StudyError(f"sweep.space.{path}: Optuna cannot propose the choice value(s) {bad!r}; "
                                 "with sweep.sampler=tpe/cmaes/gp choices must be strings, numbers, booleans or "
                                 "None (the model-free samplers random, grid, quasi_random take any value)")
            choices = tuple(dist.args) if not bad else tuple(repr(v) for v in dist.args)
            out[name] = optuna.distributions.CategoricalDistribution(choices)
        else:  # parse_distribution admits nothing else
            raise StudyError(f"sweep.space.{path}: {dist.kind} has no Optuna counterpart")
    return out


def to_params(values: dict[str, Any], space: dict[str, space_lib.Distribution]) -> dict[str, Any]:
    """A member's config values -> trial parameters."""
    params = {}
    for path, dist in space.items():
        value = values[path]
        if dist.kind == "choice" and not all(_plain(v) for v in dist.args):
            value = repr(value)  # recorded as in `distributions(space, propose=False)`
        params[param_name(path, dist)] = 1.0 - value if dist.kind == "one_minus_loguniform" else value
    return params


def from_params(params: dict[str, Any], space: dict[str, space_lib.Distribution]) -> dict[str, Any]:
    """Trial parameters -> a member's config values (inverse of `to_params`)."""
    values = {}
    for path, dist in space.items():
        value = params[param_name(path, dist)]
        if dist.kind == "one_minus_loguniform":
            value = 1.0 - value
        elif dist.kind in ("uniform", "loguniform"):
            value = float(value)
        values[path] = value
    return values


def space_signature(space: dict[str, space_lib.Distribution]) -> dict[str, str]:
    return {path: str(dist) for path, dist in sorted(space.items())}


def default_storage(workdir: str) -> str:
    return f"sqlite:///{os.path.abspath(os.path.join(workdir, 'study.db'))}"


def default_study_name(workdir: str) -> str:
    return os.path.basename(os.path.normpath(workdir)) or "cnnjax"


def _is_journal(storage: str) -> bool:
    return storage.startswith("journal:") or storage.endswith((".log", ".journal", ".jsonl"))


def validate_storage(sweep_config, workdir: str) -> tuple[str, str]:
    """(storage URL, study name) from the config; errors name the keys and the choices."""
    storage = sweep_config.get("storage") or ""
    name = sweep_config.get("study_name") or default_study_name(workdir)
    if not storage:
        if "://" in workdir:
            raise StudyError(
                f"sweep.storage must be given for a workdir in a bucket ({workdir}): SQLite cannot live there. "
                "Choices: a database URL (postgresql://USER@HOST/DB, mysql://...), an Optuna journal file on a "
                "local or shared disk (journal:/path/study.log), or sqlite:////local/path/study.db")
        storage = default_storage(workdir)
    elif not (_is_journal(storage) or "://" in storage):
        raise StudyError(f"sweep.storage={storage!r} is neither a database URL (sqlite:///PATH, postgresql://..., "
                         "mysql://...) nor an Optuna journal file (journal:PATH or a path ending in .log)")
    return storage, name


def open_storage(storage: str, attempts: int = 5):
    """An Optuna storage object; errors name the URL and the reason.

    Two workers that open a new SQLite study at the same moment race to create
    its tables; the loser retries, then finds them made.
    """
    optuna = _optuna()
    for attempt in range(attempts):
        try:
            if _is_journal(storage):
                from optuna.storages.journal import JournalFileBackend

                path = storage[len("journal:"):] if storage.startswith("journal:") else storage
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                return optuna.storages.JournalStorage(JournalFileBackend(path))
            engine_kwargs = {}
            if storage.startswith("sqlite:///"):
                folder = os.path.dirname(storage[len("sqlite:///"):])
                if folder:
                    os.makedirs(folder, exist_ok=True)
                engine_kwargs = {"connect_args": {"timeout": 60}}
            rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs)
            if storage.startswith("sqlite:"):
                _fast_sqlite(rdb.engine)
            return rdb
        except Exception as err:  # noqa: BLE001 (every driver raises its own types)
            if type(err).__name__ in ("IntegrityError", "OperationalError") and attempt + 1 < attempts:
                time.sleep(0.5 * (attempt + 1))
                continue
            reason = str(err).splitlines()[0] if str(err) else ""
            raise StudyError(f"sweep.storage={storage!r} cannot be opened: {type(err).__name__}: {reason}") from None


def _fast_sqlite(engine) -> None:
    """Write-ahead log, synced at its checkpoints rather than at every commit.

    Optuna commits once per parameter and attribute; with a sync per commit the
    asks and tells of a round cost seconds. A killed process still leaves a
    consistent database (SQLite's WAL guarantee); only a power loss may drop the
    last transactions.
    """
    from sqlalchemy import event

    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    engine.dispose()  # connections opened before the listener reconnect with it


def make_sampler(name: str, seed: int):
    """Optuna's sampler for `sweep.sampler`; model-free samplers get none (members are told, not asked)."""
    optuna = _optuna()
    if name == "tpe":
        # The constant liar treats running trials as bad ones, so one batch spreads out.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def check_sampler_available(name: str) -> None:
    """Samplers whose optional dependency is missing: a clear error, before training."""
    needs = {"cmaes": "cmaes", "gp": "torch"}
    module = needs.get(name)
    if module is None:
        return
    try:
        __import__(module)
    except ImportError:
        raise StudyError(f"sweep.sampler={name!r} needs the package {module!r}: pip install {module}") from None


def check_storage(sweep_config, workdir: str) -> None:
    """Refuses a storage that cannot be opened, before the sweep writes anything in its workdir."""
    storage, _ = validate_storage(sweep_config, workdir)
    if sweep_config.get("storage"):  # the default lives in the workdir and is made with it
        open_storage(storage)


def open_study(sweep_config, workdir: str, space: dict[str, space_lib.Distribution]):
    """Creates or loads the sweep's study; refuses one recorded with a different space."""
    optuna = _optuna()
    storage_url, name = validate_storage(sweep_config, workdir)
    dists = distributions(space, propose=sweep_config.sampler in OPTUNA_SAMPLERS)
    storage = open_storage(storage_url)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    sampler=make_sampler(sweep_config.sampler, sweep_config.seed), load_if_exists=True)
    except Exception as err:  # noqa: BLE001
        raise StudyError(f"sweep.storage={storage_url!r}: cannot create or load study {name!r}: "
                         f"{type(err).__name__}: {err}") from None
    signature = space_signature(space)
    old = study.user_attrs.get("space")
    if old is None:
        study.set_user_attr("space", signature)
    elif old != signature:
        diffs = [f"{k}: {old.get(k, '<absent>')} -> {signature.get(k, '<absent>')}"
                 for k in sorted(set(old) | set(signature)) if old.get(k) != signature.get(k)]
        raise StudyError(f"study {name!r} in {storage_url} was recorded with a different space:\n  "
                         + "\n  ".join(diffs) + "\nUse another sweep.study_name or the same space.")
    return Study(study, space, dists, files.absolute(workdir), storage_url, sweep_config.sampler, sweep_config.seed)


def _containing(dist, value):
    """`dist`, widened to hold `value` (coarse-to-fine rounds may widen a range past its first bounds)."""
    optuna = _optuna()
    if isinstance(dist, optuna.distributions.FloatDistribution) and not dist.low <= value <= dist.high:
        return optuna.distributions.FloatDistribution(min(dist.low, value), max(dist.high, value), log=dist.log)
    if isinstance(dist, optuna.distributions.IntDistribution) and not dist.low <= value <= dist.high:
        return optuna.distributions.IntDistribution(min(dist.low, value), max(dist.high, value), log=dist.log)
    return dist


class Study:
    """One sweep command's view of its Optuna study."""

    def __init__(self, study, space, dists, workdir: str, storage_url: str, sampler: str = "tpe", seed: int = 0):
        self.study = study
        self.sampler, self.seed = sampler, int(seed)
        self.space = space
        self.dists = dists
        self.workdir = workdir
        self.storage_url = storage_url

    @property
    def name(self) -> str:
        return self.study.study_name

    def ask(self, count: int, round_index: int = 0) -> list[tuple[int, dict[str, Any]]]:
        """`count` new trials at once: [(trial number, member values)].

        The sampler is seeded afresh from (`seed`, round), so a round's proposals
        depend only on the seed and the trials told before it (a resumed sweep
        asks as the uninterrupted one did). A trial whose parameter set an
        earlier-numbered trial of the study already holds (another worker's, or
        an earlier batch's) is failed and asked again, so no set is trained twice.
        """
        optuna = _optuna()
        self.study.sampler = make_sampler(self.sampler, self.seed + 7919 * int(round_index))
        asked = []
        # Parameter sets by trial number; re-read only when another worker added trials in between.
        known = self._param_sets()
        last = max(known, default=-1)
        for _ in range(count):
            for _attempt in range(100):
                trial = self.study.ask(self.dists)
                key = self._key(trial.params)
                if trial.number != last + 1:
                    known = self._param_sets(before=trial.number)
                last = trial.number
                earlier = any(k == key for n, k in known.items() if n < trial.number)
                known[trial.number] = key
                if not earlier:
                    break
                trial.set_user_attr("duplicate", True)  # never trained: the set is an earlier trial's
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                trial = None
            if trial is None:
                raise StudyError(f"study {self.name!r}: the sampler keeps proposing parameter sets that were "
                                 "already tried; the space may be exhausted")
            trial.set_user_attr("workdir", self.workdir)
            trial.set_user_attr("round", int(round_index))
            asked.append((trial.number, from_params(trial.params, self.space)))
        return asked

    def tell(self, number: int, record) -> None:
        """Reports a trained member (a `MemberRecord`) for the trial `number`."""
        optuna = _optuna()
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        if self.study._storage.get_trial(trial_id).state.is_finished():
            return  # told before a resume
        self._set_attrs(trial_id, record)
        if record.diverged or not math.isfinite(record.best_val_accuracy):
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(number, record.best_val_accuracy)

    def record(self, records: Iterable[Any], round_of: dict[int, int] | None = None) -> int:
        """Adds trained members of a model-free sweep as finished trials (once each); returns how many."""
        optuna = _optuna()
        done = {(t.user_attrs.get("workdir"), t.user_attrs.get("member"))
                for t in self.study.get_trials(deepcopy=False)}
        added = 0
        for rec in records:
            if (self.workdir, rec.member) in done:
                continue
            values = {p: rec.values[p] for p in self.space if p in rec.values}
            if len(values) != len(self.space):
                continue  # a member outside the space (e.g. explicit members)
            failed = rec.diverged or not math.isfinite(rec.best_val_accuracy)
            params = to_params(values, self.space)
            trial = optuna.trial.create_trial(
                params=params, distributions={k: _containing(d, params[k]) for k, d in self.dists.items()},
                value=None if failed else rec.best_val_accuracy,
                state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
                user_attrs=self._attrs(rec),
            )
            self.study.add_trial(trial)
            added += 1
        return added

    def _attrs(self, record) -> dict[str, Any]:
        return {"workdir": self.workdir, "member": int(record.member), "round": int(record.extra.get("round", 0)),
                "steps": int(record.steps), "values": json.loads(json.dumps(record.values, default=str))}

    def _set_attrs(self, trial_id: int, record) -> None:
        for key, value in self._attrs(record).items():
            if key not in ("workdir", "round"):  # set when the trial was asked
                self.study._storage.set_trial_user_attr(trial_id, key, value)

    def _param_sets(self, before: int | None = None, wait_s: float = 3.0) -> dict[int, tuple]:
        """Parameter sets of the trials numbered below `before` (all when None).

        Another worker's trial is created before its parameters are written: a
        recent running trial with some parameters missing is waited for (up to
        `wait_s`), so two workers cannot both keep one set.
        """
        deadline = time.monotonic() + wait_s
        while True:
            trials = [t for t in self.study.get_trials(deepcopy=False) if before is None or t.number < before]
            newest = max((t.number for t in trials), default=-1)
            pending = [t for t in trials if t.state == _optuna().trial.TrialState.RUNNING
                       and len(t.params) < len(self.dists) and t.number > newest - 64]
            if not pending or time.monotonic() > deadline:
                return {t.number: self._key(t.params) for t in trials if t.params}
            time.sleep(0.05)

    @staticmethod
    def _key(params: dict[str, Any]) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in params.items()))
