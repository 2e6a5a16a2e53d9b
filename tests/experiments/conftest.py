"""The experiment modules' shared fixture: each experiment's smoke run, once per test module."""

import pytest


@pytest.fixture(scope="module")
def result(request, tmp_path_factory):
    """`(workdir, what run returned)` for the test module's `EXPERIMENT`, run at smoke size."""
    experiment = request.module.EXPERIMENT
    workdir = str(tmp_path_factory.mktemp(experiment.__name__.rsplit(".", 1)[-1]))
    return workdir, experiment.run(workdir, variant="smoke")
