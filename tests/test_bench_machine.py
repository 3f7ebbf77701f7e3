"""Memory and machine facts of the benchmarks (psutil): a worker over its memory limit is
stopped with every process it started and recorded as "memory"; peak RSS is in MiB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from qcxr.bench import table3
from qcxr.bench.machine import machine_info, peak_rss_mb, tree_rss_gib

ALLOCATE = "b = b'x' * (300 * 1024**2)"  # 300 MiB, written, so resident


def test_peak_rss_is_in_mib():
    code = f"{ALLOCATE}; from qcxr.bench.machine import peak_rss_mb; print(peak_rss_mb())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 300 <= float(done.stdout) < 1000
    assert 10 < peak_rss_mb() < 64 * 1024  # this test process, in MiB


def test_machine_facts_come_from_psutil():
    machine = machine_info()
    assert machine.memory_gib == pytest.approx(psutil.virtual_memory().total / 1024**3)
    assert machine.logical_cpus == psutil.cpu_count() >= 1
    assert machine.cpu and machine.platform and machine.date
    assert json.loads(json.dumps(machine.as_dict())) == machine.as_dict()


def test_tree_rss_counts_the_children():
    child = ALLOCATE + "; input()"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while tree_rss_gib(parent.pid) < 0.29 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tree_rss_gib(parent.pid) >= 0.29
        assert psutil.Process(parent.pid).memory_info().rss < 0.1 * 1024**3  # the parent alone
    finally:
        parent.communicate(b"\n", timeout=30)
    assert tree_rss_gib(parent.pid) == 0.0  # gone


@pytest.mark.skipif(os.name != "posix", reason="the wrapper interpreter is a shell script")
def test_worker_over_the_memory_limit_is_stopped_and_recorded(tmp_path, capsys):
    """An "interpreter" that starts a child taking 300 MiB: the harness kills both."""
    pid_file = tmp_path / "child.pid"
    child = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
        f"{ALLOCATE}; time.sleep(120)"
    )
    wrapper = tmp_path / "python"
    wrapper.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            case "$*" in *--probe*) exec {sys.executable} "$@";; esac
            {sys.executable} -c "{child}"
            """)
    )
    wrapper.chmod(0o755)
    code = table3.main(
        ["--frameworks", "qcxr", "--heads", "cdl", "--labels", "2", "--backbone", "none"]
        + ["--max-rss-gib", "0.1", "--timeout", "60", "--python-qcxr", str(wrapper)]
        + ["--out", str(tmp_path / "out")]
    )
    cell = json.loads((tmp_path / "out" / "cells" / "qcxr_cdl_n2_none_b32.json").read_text())
    assert code == 0, cell
    assert cell["status"] == "memory" and cell["reason"] == "killed above 0.1 GiB RSS"
    assert "qcxr_cdl_n2_none_b32: memory" in capsys.readouterr().err
    child_pid = int(pid_file.read_text())
    assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == "zombie"


@pytest.mark.skipif(os.name != "posix", reason="the wrapper interpreter is a shell script")
def test_worker_past_its_time_limit_is_stopped_and_recorded(tmp_path):
    wrapper = tmp_path / "python"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$*" in *--probe*) exec {sys.executable} "$@";; esac\nsleep 60\n'
    )
    wrapper.chmod(0o755)
    start = time.monotonic()
    table3.main(
        ["--frameworks", "qcxr", "--heads", "cdl", "--labels", "2", "--backbone", "none"]
        + ["--timeout", "1", "--python-qcxr", str(wrapper), "--out", str(tmp_path / "out")]
    )
    cell = json.loads(next(Path(tmp_path / "out" / "cells").iterdir()).read_text())
    assert cell["status"] == "timeout" and cell["reason"] == "killed after 1 s"
    assert time.monotonic() - start < 30


def test_a_child_does_not_report_its_parents_peak():
    """exec keeps the parent's ru_maxrss on Linux: a small worker started by a large process
    must still report its own peak."""
    child = "from qcxr.bench.machine import peak_rss_mb; print(peak_rss_mb())"
    parent = (
        "import subprocess, sys; big = bytearray(600 * 1024 * 1024)\n"
        "for i in range(0, len(big), 4096): big[i] = 1\n"
        f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, "
        "text=True, check=True).stdout)"
    )
    done = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, check=True
    )
    assert float(done.stdout) < 300
