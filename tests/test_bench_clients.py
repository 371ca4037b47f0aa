"""benchmarks/_clients.run_measured: the peak RSS, CPU and exit code are the tool's own.

The memory benchmark compares peak RSS across file sizes, so a figure that
carried pytest's own RSS (Linux keeps the high-water mark across fork and exec)
would hide exactly what it is there to show.
"""

from __future__ import annotations

import os
import sys

from benchmarks._clients import run_measured

ENV = dict(os.environ)


def test_peak_rss_is_the_tools_not_the_parents(tmp_path):
    ballast = bytearray(300 * 1024 * 1024)  # this process: +300 MB resident
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    small = run_measured([sys.executable, "-S", "-c", "pass"], env=ENV, cwd=tmp_path)
    big = run_measured(
        [
            sys.executable,
            "-S",
            "-c",
            "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])",
        ],
        env=ENV,
        cwd=tmp_path,
    )
    del ballast
    assert small.returncode == 0 and big.returncode == 0, (small.tail(), big.tail())
    assert small.max_rss_kb < 60 * 1024, small.max_rss_kb
    assert 200 * 1024 <= big.max_rss_kb < 280 * 1024, big.max_rss_kb
    assert big.cpu_seconds > 0 and big.seconds > 0


def test_exit_code_output_and_timeout(tmp_path):
    m = run_measured(
        [sys.executable, "-S", "-c", "import sys; print('out'); sys.exit('bad input')"],
        env=ENV,
        cwd=tmp_path,
    )
    assert m.returncode == 1 and m.stdout.strip() == "out" and "bad input" in m.tail()
    slow = run_measured(
        [sys.executable, "-S", "-c", "import time; time.sleep(30)"],
        env=ENV,
        cwd=tmp_path,
        timeout=1,
    )
    assert slow.returncode == -9 and slow.seconds < 10
