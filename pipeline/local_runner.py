"""The DirectRunner the project runs on: Beam's, without its first try on Prism.

Beam's DirectRunner (SwitchingDirectRunner) first tries every pipeline on the Prism runner, which
downloads a Go binary from GitHub when it has none: on a machine without that network it fails and
falls back after a DNS lookup, a worker pool on localhost and a temp folder left in /tmp per
pipeline; on a machine with it, the run silently moves to a runner this project does not test.
Here the switch goes straight to the runner it falls back to (the FnApiRunner for our batch
pipelines; the bundle-based one where that cannot run), as every test and benchmark measured.
"""
from __future__ import annotations

from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner


class DirectRunner(SwitchingDirectRunner):
    # SwitchingDirectRunner reads this flag only to rule Prism out (interactive pipelines cannot use it).
    _is_interactive = True
