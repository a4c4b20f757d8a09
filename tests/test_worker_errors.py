"""A UserError raised on a worker comes back to the launcher as that UserError (real Beam runners:
in process, and worker processes whose errors come back as text)."""
from __future__ import annotations

import apache_beam as beam
import pytest

from curation.errors import UserError
from pipeline.options import pipeline_options
from pipeline.worker_errors import marked, user_errors_from_workers


def _fail_on_worker(x):
    if x == 2:
        raise marked(UserError("torch sees no CUDA GPU", where="config.yaml: models[0] (ref)", hint="Use cpu."))
    return x


@pytest.mark.parametrize("args", [[], ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]])
def test_a_workers_user_error_is_raised_on_the_launcher(args):
    with pytest.raises(UserError) as caught:
        with user_errors_from_workers(), beam.Pipeline(options=pipeline_options(args)) as p:
            _ = p | beam.Create([1, 2, 3]) | beam.Map(_fail_on_worker)
    assert str(caught.value) == "config.yaml: models[0] (ref): torch sees no CUDA GPU. Use cpu."


def test_other_worker_errors_stay_as_they_are():
    with pytest.raises(Exception) as caught:
        with user_errors_from_workers(), beam.Pipeline(options=pipeline_options([])) as p:
            _ = p | beam.Create([1]) | beam.Map(lambda x: 1 / 0)
    assert not isinstance(caught.value, UserError) and "division by zero" in str(caught.value)
