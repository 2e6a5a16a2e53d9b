"""Model-based search: Optuna proposes each round's population, cnnjax trains it.

`sweep.sampler` = `tpe` | `cmaes` | `gp` with `sweep.strategy = single` runs
`sweep.rounds` rounds. Each round asks the study for `sweep.population_size`
trials at once, trains them as one population (later rounds reuse the compiled
step: same group, same size) and tells the study every member's best
validation accuracy; diverged members are failed trials.

Resume: a round's trials carry the workdir and round as user attributes the
moment they are asked, so a resumed sweep takes the same trials back (told or
still running) instead of asking again, trains the same members, and the study
holds each trial once.
"""

from __future__ import annotations

import time
from typing import Any

from cnnjax.training.sharding import from_process_0
from cnnjax.tuning import study as study_lib
from cnnjax.tuning.best import score


def round_batch(study: study_lib.Study, round_index: int, size: int) -> list[tuple[int, dict[str, Any]]]:
    """The round's (trial number, values): those asked before (a resumed sweep), then new ones."""
    mine = [t for t in study.study.get_trials(deepcopy=False)
            if t.user_attrs.get("workdir") == study.workdir and t.user_attrs.get("round") == round_index
            and t.params]
    mine.sort(key=lambda t: t.number)
    batch = [(t.number, study_lib.from_params(t.params, study.space)) for t in mine[:size]]
    if len(batch) < size:
        batch += study.ask(size - len(batch), round_index=round_index)
    return batch


def run_model_based(sweep) -> None:
    """`sweep.rounds` rounds of ask (a population batch), train, tell."""
    from cnnjax.tuning.context import train_groups

    s = sweep.config.sweep
    rounds = []
    for r in range(s.rounds):
        t0 = time.perf_counter()
        # Process 0 holds the study; with several processes the others train the members it proposed.
        batch = round_batch(sweep.study, r, s.population_size) if sweep.study is not None else None
        batch = [(number, values) for number, values in from_process_0(batch)]
        t1 = time.perf_counter()
        members = [values for _, values in batch]
        ids = sweep.new_records(members, round_index=r)
        for member, (number, _) in zip(ids, batch):
            sweep.records[member].extra["trial"] = number
        train_groups(sweep, members, ids, label=f"round {r + 1}/{s.rounds}")
        t2 = time.perf_counter()
        for member, (number, _) in zip(ids, batch):
            if sweep.study is not None:
                sweep.study.tell(number, sweep.records[member])
        t3 = time.perf_counter()
        best = max((sweep.records[m] for m in ids), key=score)
        # Wall times: Optuna's share of a round (ask + tell) against training it.
        rounds.append({"round": r, "trials": [n for n, _ in batch], "best_member": best.member,
                       "best": best.best_val_accuracy, "ask_s": t1 - t0, "train_s": t2 - t1, "tell_s": t3 - t2})
    sweep.extra = {"rounds": rounds}

