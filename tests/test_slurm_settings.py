"""The [slurm] table: every malformed value is a ConfigError naming the key and the fix."""
from __future__ import annotations

import pytest

from mcc.backends.slurm_settings import slurm_settings
from mcc.errors import ConfigError


def test_defaults_and_a_full_table() -> None:
    assert slurm_settings(None).time_limit == "1-00:00:00" and slurm_settings({}).requeue is True
    s = slurm_settings({"partition": "debug", "account": "proj1", "qos": "normal", "time_limit": "12:00:00",
                        "cpus_per_worker": 4, "mem_per_worker": "8G", "workers": 16, "bucket_dir": "/scratch/me",
                        "sbatch_args": ["--constraint=haswell", "--exclusive"], "core_hour_usd": 0.02, "requeue": False})
    assert (s.partition, s.cpus_per_worker, s.workers, s.sbatch_args) == ("debug", 4, 16, ["--constraint=haswell", "--exclusive"])


@pytest.mark.parametrize("table, expect", [
    ({"time_limit": "1 day"}, ["`time_limit` = '1 day' is not a Slurm time limit", "HH:MM:SS"]),
    ({"manager_time_limit": "25:99:00:00"}, ["`manager_time_limit`"]),
    ({"sbatch_args": ["--array=0-9"]}, ["sets --array, which mcc owns", "Remove it"]),
    ({"sbatch_args": ["--comment=mine"]}, ["sets --comment, which mcc owns"]),
    ({"sbatch_args": ["-J", "name"]}, ["sets -J, which mcc owns"]),
    ({"sbatch_args": ["--job-name=x"]}, ["sets --job-name"]),
    ({"sbatch_args": ["--output=/tmp/x"]}, ["sets --output, which mcc owns"]),
    ({"sbatch_args": ["-o/tmp/x"]}, ["sets -o"]),
    ({"sbatch_args": "--exclusive"}, ["`sbatch_args` must be"]),
    ({"sbatch_args": ["exclusive"]}, ["is not one"]),
    ({"cpus_per_worker": "2"}, ["`cpus_per_worker` must be an integer"]),
    ({"cpus_per_worker": 0}, ["`cpus_per_worker` must be an integer >= 1"]),
    ({"workers": True}, ["`workers` must be an integer"]),
    ({"mem_per_worker": "2 GB"}, ["`mem_per_worker`", "\"2G\""]),
    ({"core_hour_usd": -1}, ["`core_hour_usd` must be >= 0"]),
    ({"partiton": "debug"}, ["unknown key `partiton`", "Did you mean `partition`?"]),
])
def test_malformed(table: dict, expect: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        slurm_settings(table)
    text = str(info.value)
    assert text.startswith("mcc.toml [slurm]:"), text
    for part in expect:
        assert part in text, text
