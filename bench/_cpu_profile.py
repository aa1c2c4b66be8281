"""Run a module under cProfile with a CPU-time clock: ``python -m bench._cpu_profile OUT -m MODULE ARGS...``.

``python -m bench._cpu_profile OUT --wait-for-signal -m MODULE ARGS...``: profiling starts at SIGUSR1.

cProfile's default clock is wall time, so on a busy machine a ``send()`` that wakes the peer shows the
time the proxy spent preempted. Counting CPU time shows where the proxy itself spends its cycles.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time


def main() -> None:
    out, module, *args = sys.argv[1:]
    wait = module == "--wait-for-signal"
    if wait:
        module, *args = args
    if module == "-m":
        module, *args = args
    sys.argv = [module, *args]
    profiler = cProfile.Profile(time.thread_time)
    if wait:  # the caller warms the program up first, then sends SIGUSR1
        signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    else:
        profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
