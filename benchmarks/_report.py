"""Shared output of the benchmark scripts: peak host and device memory."""
import resource

import jax


def print_peak_memory(extra: str = "") -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak host RSS: {peak:.0f} MiB{extra}")
    dev = jax.devices()[0]
    if dev.platform == "gpu":
        stats = dev.memory_stats() or {}
        print(f"peak device memory: {stats.get('peak_bytes_in_use', 0) / 2**20:.0f} MiB")
