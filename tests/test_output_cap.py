"""mcc.remote.output_cap: one capped copy of what the computation prints, per point and per worker."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import logging, os, sys, time
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")  # as the worker's setup_logging
from mcc.remote.output_cap import OutputCap
point = [0]
cap = OutputCap(lambda: point[0], per_point=1000, per_worker=2500)
for p in range(5):
    point[0] = p
    sys.stdout.write("x" * 3000)
    sys.stdout.flush()
    os.write(2, b"y" * 10)  # what C code or a child process writes to the descriptor itself
    deadline = time.monotonic() + 30
    while cap.total + cap.dropped < 3010 * (p + 1) and time.monotonic() < deadline:
        time.sleep(0.001)
logging.getLogger().warning("the worker's own line")
"""


def test_output_is_capped_per_point_and_per_worker_with_a_note(tmp_path: Path) -> None:
    log = tmp_path / "w-0001.log"
    with open(log, "wb") as fh:
        subprocess.run([sys.executable, "-c", CHILD], stdout=fh, stderr=subprocess.STDOUT, timeout=60, check=True)
    text = log.read_text()
    output = re.sub(r"\n\[mcc: [^\]]*\]\n", "", text).replace("the worker's own line", "")
    assert output.strip() == "x" * 2500  # no "y": what went to the descriptor itself was captured (and cut) too
    assert text.count("output of this point cut after 1000 bytes (per-point cap)") == 2
    assert text.count("output of this worker cut after 2500 bytes (per-worker cap)") == 1
    assert text.rstrip().endswith("the worker's own line")  # our lines are never cut
