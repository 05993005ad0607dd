#!/usr/bin/env python3
"""What a durable write costs where a database file grows, against where it overwrites.

Writes 24 KiB (six 4 KiB pages, about one small commit of chime's) and fdatasyncs it, N times:
  new       into space the file grows into as it goes (what redb's set_len growth gives)
  fallocate into space reserved with posix_fallocate (unwritten extents)
  written   into space written with zeros (and synced) beforehand
Reports latency p50/p99 and CPU per write+fdatasync. chimed's store fills grown space with zeros
a chunk at a time (daemon/src/store/file.rs) because of the difference between the first and the
last. Run on the file system under test: python3 tests/bench/fsync-probe.py [DIR] [N]
"""
import os, resource, sys, tempfile, time

DIR = sys.argv[1] if len(sys.argv) > 1 else "."
N = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
WRITE = 4096 * 6


def run(name, prepare):
    fd, path = tempfile.mkstemp(dir=DIR, prefix="fsync-probe-")
    try:
        prepare(fd)
        os.fsync(fd)
        data = os.urandom(WRITE)
        before = resource.getrusage(resource.RUSAGE_SELF)
        lat = []
        for i in range(N):
            t = time.perf_counter()
            os.pwrite(fd, data, i * WRITE)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_SELF)
        lat.sort()
        cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / N * 1e6
        print(f"{name:10s} p50 {lat[N // 2] * 1e3:.3f} ms  p99 {lat[N * 99 // 100] * 1e3:.3f} ms"
              f"  CPU {cpu:.0f} us per write+fdatasync")
    finally:
        os.close(fd)
        os.unlink(path)


def zeros(fd):
    chunk = bytes(WRITE * 100)
    for i in range(0, N, 100):
        os.pwrite(fd, chunk, i * WRITE)


for _ in range(2):
    run("new", lambda fd: None)
    run("fallocate", lambda fd: os.posix_fallocate(fd, 0, N * WRITE))
    run("written", zeros)
