"""Table III on this machine: `python benchmarks/table3.py [options of `qcxr bench table3`]`.

Results go to benchmarks/table3-cpu/ unless --out is given; measured cells there are reused, so
the recording can be built up in parts (e.g. PennyLane at n = 19 with fewer steps first).
See benchmarks/table3-cpu.md for the recorded tables and the commands that produced them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qcxr.bench.table3 import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--out" not in argv:
        argv += ["--out", str(Path(__file__).parent / "table3-cpu")]
    sys.exit(main(argv))
