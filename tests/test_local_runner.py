"""The DirectRunner every command runs on does not try Prism first (pipeline/local_runner.py): Beam's
own would download a binary from GitHub per pipeline, or run on a runner nothing here tests.
Real Beam; Prism is replaced by a stand-in that records being asked and refuses, so that the test
touches no network whether or not the fix is in place."""
from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.portability import prism_runner
from apache_beam.testing.util import assert_that, equal_to

from pipeline.options import LOCAL_RUNNER, pipeline_options


class _Refused(Exception):
    pass


@pytest.mark.parametrize("args", [[], ["--runner", "DirectRunner"],
                                  ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]])
def test_the_direct_runner_never_asks_prism(args, monkeypatch):
    asked = []

    def stand_in(*a, **k):
        asked.append(True)
        raise _Refused("a stand-in for Prism")

    monkeypatch.setattr(prism_runner, "PrismRunner", stand_in)
    options = pipeline_options(args)
    assert options.view_as(StandardOptions).runner == LOCAL_RUNNER
    with beam.Pipeline(options=options) as p:
        doubled = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: 2 * x)
        assert_that(doubled, equal_to([2, 4, 6]))
    assert asked == []


def test_other_runners_stay_as_named():
    assert pipeline_options(["--runner", "PortableRunner"]).view_as(StandardOptions).runner == "PortableRunner"
