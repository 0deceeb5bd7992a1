"""`conveyor slurm` refuses a bad mapping at start-up, before it touches a server or Slurm."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from agent.cli import main


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CONVEYOR_SLURM_QUEUES", '{"gpu": {"nodes": "4"}}', "slurm_queues.gpu: 'nodes'"),
        ("CONVEYOR_SLURM_QUEUES", '{"gpu": {"gres": "gpu:1 --uid=0"}}', "is not e.g. gpu:2"),
        ("CONVEYOR_SLURM_QUEUES", "not json", "not JSON"),
        ("CONVEYOR_SLURM_DEFAULTS", "time=forever", "slurm_defaults: time='forever'"),
    ],
)
def test_a_bad_mapping_is_a_usage_error(variable: str, value: str, says: str) -> None:
    result = CliRunner().invoke(
        main,
        ["slurm", "--api-host", "http://127.0.0.1:9"],
        env={variable: value, "CONVEYOR_CONFIG": ""},
    )
    assert result.exit_code == 2, result.output
    assert says in result.output
