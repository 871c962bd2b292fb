"""Slurm command text and parsing (pure: recorded outputs of Slurm 22.05, no cluster needed)."""
from __future__ import annotations

from datetime import datetime

import pytest

from mcc.providers.slurm import scheduler as s

SQUEUE = (
    "6_1|6|6|1|mcc-r1-workers|Name=r1-worker,mcc:entity=r1/workers,mcc:ledger=L1,mcc:role=worker|PENDING|N/A|1|0|debug|\n"
    "6_0|7|6|0|mcc-r1-workers|Name=r1-worker,mcc:entity=r1/workers,mcc:ledger=L1,mcc:role=worker|RUNNING|2026-12-02T00:31:59|2|1|debug|\n"
    "8|8|8|N/A|theirs|a|b|c|RUNNING|2026-12-02T00:32:15|1|0|urgent|\n"
    "9|9|9|N/A|untagged||PENDING|N/A|1|0|debug|\n"
)


def test_parse_squeue() -> None:
    jobs = s.parse_squeue(SQUEUE)
    assert [j.id for j in jobs] == ["6_1", "6_0", "8", "9"]
    pending, running, theirs, untagged = jobs
    assert (pending.array_job_id, pending.array_task_id, pending.state, pending.start) == ("6", "1", "PENDING", None)
    assert running.running and running.job_id == "7" and running.cpus == 2 and running.restarts == 1
    assert running.start == datetime(2026, 12, 2, 0, 31, 59).timestamp()
    assert running.tags == {"Name": "r1-worker", "mcc:entity": "r1/workers", "mcc:ledger": "L1", "mcc:role": "worker"}
    assert theirs.comment == "a|b|c" and theirs.partition == "urgent" and theirs.array_task_id is None
    assert untagged.tags == {} and untagged.comment == ""


def test_comment_round_trip() -> None:
    tags = {"mcc:ledger": "0f8e-1", "mcc:run": "r-1", "mcc:entity": "r-1/manager", "Name": "a,b=c d"}
    assert s.tags_of(s.comment_of(tags)) == {**tags, "Name": "a_b_c_d"}


def test_sbatch_argv_and_parse() -> None:
    req = s.JobRequest(name="n", comment="mcc:ledger=L", script="#!/bin/sh\n", output="/b/logs/w-%A_%a.log",
                       chdir="/p", cpus=2, partition="debug", time_limit="1:00:00", array="0-3%2", requeue=True,
                       extra=("--constraint=x",))
    argv = s.sbatch_argv(req)
    assert argv[:2] == ["sbatch", "--parsable"] and "--array=0-3%2" in argv and "--requeue" in argv
    assert "--comment=mcc:ledger=L" in argv and "--partition=debug" in argv and argv[-1] == "--constraint=x"
    assert s.sbatch_argv(req, test_only=True)[-1] == "--test-only"
    assert s.parse_sbatch("123\n") == "123" and s.parse_sbatch("124;cluster\n") == "124"
    with pytest.raises(ValueError):
        s.parse_sbatch("sbatch: error: invalid partition\n")


def test_times() -> None:
    jobcomp = ("JobId=3 UserId=root(0) GroupId=root(0) Name=t1 JobState=COMPLETED Partition=debug TimeLimit=UNLIMITED "
               "StartTime=2026-12-02T00:31:19 EndTime=2026-12-02T00:31:24 NodeList=localhost NodeCnt=1 ProcCnt=2 "
               "ArrayJobId=1 ArrayTaskId=0 ExitCode=0:0\n"
               "JobId=5 Name=x JobState=CANCELLED StartTime=2026-12-02T00:31:20 EndTime=2026-12-02T00:31:30 ProcCnt=1 "
               "ArrayJobId=0 ArrayTaskId=4294967294\n")
    times = s.parse_jobcomp(jobcomp)
    assert set(times) == {"1_0", "5"} and times["1_0"][0].cpus == 2
    assert times["1_0"][0].end - times["1_0"][0].start == 5
    # a task preempted (requeued), then cancelled while it waited to run again: both runs, in order; the second
    # never got a node, so it has no start (its StartTime is when it was cancelled)
    requeued = ("JobId=277 Name=w JobState=PREEMPTED StartTime=2026-12-03T09:48:30 EndTime=2026-12-03T09:48:33 "
                "NodeList=localhost NodeCnt=1 ProcCnt=1 ArrayJobId=276 ArrayTaskId=0\n"
                "JobId=277 Name=w JobState=CANCELLED StartTime=2026-12-03T09:48:35 EndTime=2026-12-03T09:48:35 "
                "NodeList=(null) NodeCnt=0 ProcCnt=0 ArrayJobId=276 ArrayTaskId=0\n")
    first, second = s.parse_jobcomp(requeued)["276_0"]
    assert (first.state, first.end - first.start, first.cpus) == ("PREEMPTED", 3, 1)
    assert second.state == "CANCELLED" and second.start is None and second.end is not None
    sacct = s.parse_sacct("102|2026-12-02T00:41:40|2026-12-02T00:41:49|1|COMPLETED\n103_0|2026-12-02T00:41:44|Unknown|4|RUNNING\n"
                          "104_1|2026-12-02T00:41:40|2026-12-02T00:41:45|1|PREEMPTED\n104_1|None|2026-12-02T00:41:50|1|CANCELLED\n")
    assert sacct["102"][0].end - sacct["102"][0].start == 9
    assert sacct["103_0"][0].end is None and sacct["103_0"][0].cpus == 4
    assert [(t.state, t.start is None) for t in sacct["104_1"]] == [("PREEMPTED", False), ("CANCELLED", True)]
    assert "--duplicates" in s.sacct_argv(["104"])  # every run of a requeued job, not only its last
    config = "JobCompLoc              = /var/log/slurm/jobcomp.log\nJobCompType             = jobcomp/filetxt\n"
    assert s.jobcomp_location(config) == "/var/log/slurm/jobcomp.log"
    assert s.jobcomp_location("JobCompType = jobcomp/none\n") is None


@pytest.mark.parametrize("text, seconds", [("90", 5400), ("10:30", 630), ("12:00:00", 43200), ("1-00:00:00", 86400),
                                           ("2-12", 216000), ("1-02:30", 95400)])
def test_time_limit(text: str, seconds: int) -> None:
    assert s.time_limit_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "1 day", "1:2:3:4", "-5", "abc"])
def test_time_limit_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        s.time_limit_seconds(text)


def test_owned_options() -> None:
    assert [s.owned_option(a) for a in ("--array=1-3", "-a 1", "-J x", "-o/x", "--comment=c")] == \
        ["--array", "-a", "-J", "-o", "--comment"]
    assert [s.owned_option(a) for a in ("--account=x", "-A x", "--exclusive", "--constraint=a", "--open-mode=append")] == \
        [None] * 5


def test_shell_script_quotes() -> None:
    script = s.shell_script({"MCC_STORE": "file:///a b/'c'"}, ["/usr/bin/python3", "-m", "mcc.remote.slurm_job"])
    assert script.startswith("#!/bin/sh\n") and "export MCC_STORE='file:///a b/'\"'\"'c'\"'\"''" in script
    assert script.rstrip().endswith("exec /usr/bin/python3 -m mcc.remote.slurm_job")
