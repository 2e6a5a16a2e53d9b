"""`auto`'s search over execution plans: which candidates it measures, and what it keeps."""

import pytest

from cnnjax.tuning import plans
from cnnjax.tuning.plans import Plan


def test_ladder_orders_candidates_by_members_per_inner_step():
    assert [str(p) for p in plans.candidate_plans(1)] == ["vmap"]
    assert [str(p) for p in plans.candidate_plans(2)] == ["sequential", "vmap"]
    assert [str(p) for p in plans.candidate_plans(16)] == [
        "sequential", "chunked(2)", "chunked(4)", "chunked(8)", "vmap"]
    assert [str(p) for p in plans.candidate_plans(24)] == [
        "sequential", "chunked(2)", "chunked(4)", "chunked(8)", "chunked(16)", "vmap"]


def _walk(size, table):
    """Runs the search over `table` (plan name -> ms, None = does not fit); returns the inner plans measured."""
    ladder = plans.candidate_plans(size)
    measured = []

    def measure(plan: Plan):
        measured.append(str(plan))
        return table[str(plan)]

    plans.walk_inward(ladder[1:-1], table[str(ladder[0])], table[str(ladder[-1])], measure)
    return measured


@pytest.mark.parametrize("table, measured", [
    # CPU-like: a minimum at chunks of 2; the walk starts at sequential and stops at 4.
    ({"sequential": 85, "chunked(2)": 72, "chunked(4)": 88, "chunked(8)": 104, "vmap": 115},
     ["chunked(2)", "chunked(4)"]),
    # Accelerator-like: bigger is better all the way; the walk starts at vmap and stops at once.
    ({"sequential": 900, "chunked(2)": 500, "chunked(4)": 300, "chunked(8)": 200, "vmap": 120},
     ["chunked(8)"]),
    # A minimum inside, reached from the vmap end.
    ({"sequential": 900, "chunked(2)": 500, "chunked(4)": 100, "chunked(8)": 110, "vmap": 120},
     ["chunked(8)", "chunked(4)", "chunked(2)"]),
    # vmap does not fit: walk up from sequential until a chunk does not fit either.
    ({"sequential": 90, "chunked(2)": 80, "chunked(4)": 70, "chunked(8)": None, "vmap": None},
     ["chunked(2)", "chunked(4)", "chunked(8)"]),
    # Nothing fits: nothing more is compiled.
    ({"sequential": None, "chunked(2)": None, "chunked(4)": None, "chunked(8)": None, "vmap": None}, []),
])
def test_walk_measures_from_the_faster_end_until_no_gain(table, measured):
    assert _walk(16, table) == measured
