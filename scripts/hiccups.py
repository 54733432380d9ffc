#!/usr/bin/env python3
"""Measures how late this machine wakes a sleeping thread: the platform's own latency floor.

Sleeps 100 us in a loop for SECONDS and reports every wake-up more than 1 ms after the previous
one (its monotonic time and the gap in ms). Run one per CPU on an otherwise idle machine:

    taskset -c 0 python3 scripts/hiccups.py 10 cpu0 & taskset -c 1 python3 scripts/hiccups.py 10 cpu1; wait

A gap is time the thread could not run: the kernel or the hypervisor had the CPU. Any
latency figure measured on the machine (BENCHMARKS.md, FIX p99) includes these.
"""
import sys
import time


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    label = sys.argv[2] if len(sys.argv) > 2 else "this thread"
    end = time.monotonic() + seconds
    gaps = []
    prev = time.monotonic()
    while True:
        time.sleep(0.0001)
        now = time.monotonic()
        if now > end:
            break
        if now - prev > 0.001:
            gaps.append((round(now, 3), round((now - prev) * 1000, 2)))
        prev = now
    largest = sorted(gaps, key=lambda g: -g[1])[:8]
    print(f"{label}: {len(gaps)} gaps over 1 ms in {seconds:g} s; largest (time, ms): {largest}")


if __name__ == "__main__":
    main()
