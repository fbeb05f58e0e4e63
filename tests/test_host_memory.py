"""CPU training's host-memory setting: freed large blocks are reused, not faulted in again.

Each case runs in its own interpreter: the allocator's state (what the heap holds) is
process-wide. Measured as minor page faults of a loop that allocates, touches and frees a
large tensor, after enough rounds for the heap to reach its steady state (aligned blocks
take a few rounds to be reused), as a training loop's steps do.
"""

import json
import resource
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from channel_ssl.host_memory import freed_host_memory_kept

    def faults(rounds, mib):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(rounds):
            block = torch.empty(mib * 2**20 // 4)
            block.fill_(1.0)  # touch every page
            del block
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    out = {}
    with freed_host_memory_kept(enabled=sys.argv[1] in ("kept", "nested")) as applied:
        out["applied"] = applied
        if sys.argv[1] == "nested":  # an inner block ending leaves the outer one's setting
            with freed_host_memory_kept():
                pass
        faults(8, 64)  # the heap's steady state
        out["inside"] = faults(5, 64)
    # after the block: glibc's defaults, blocks larger than any the heap kept are mmap'd again
    faults(2, 128)
    out["after"] = faults(5, 128)
    print(json.dumps(out))
    """
)


def _run(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_freed_blocks_are_reused_inside_and_the_defaults_come_back_after():
    pages = 5 * 64 * 2**20 // resource.getpagesize()
    plain, kept = _run("plain"), _run("kept")
    assert plain["applied"] is False and kept["applied"] is True  # this machine: glibc
    assert plain["inside"] >= 0.8 * pages  # every round's block faulted in again
    assert kept["inside"] < 0.05 * pages  # reused from the heap
    assert kept["after"] >= 0.8 * 2 * pages  # 128 MiB blocks: mmap'd and returned again


def test_a_nested_block_ending_keeps_the_outer_setting():
    pages = 5 * 64 * 2**20 // resource.getpagesize()
    nested = _run("nested")
    assert nested["inside"] < 0.05 * pages
    assert nested["after"] >= 0.8 * 2 * pages
