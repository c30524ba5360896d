"""A replica's memory report: resident bytes of its process tree, and a peak that never falls."""

import os
import subprocess
import sys

from serve.process_memory import replica_memory, tree_rss


def test_tree_rss_counts_a_childs_memory_and_ignores_pids_that_are_gone():
    alone = tree_rss([os.getpid()])
    # A child that holds 200 MB resident: the tree grows by about that much.
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(200 << 20); "
                              "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with_child = tree_rss([os.getpid()])
        assert with_child - alone > 150 << 20
        assert tree_rss([child.pid]) > 200 << 20
    finally:
        child.kill()
        child.wait()
    assert tree_rss([child.pid]) == 0  # gone: nothing, no error


def test_replica_memory_peak_is_never_below_now_and_keeps_the_high_water_mark():
    first = replica_memory()
    assert 0 < first["rss_bytes"] <= first["peak_rss_bytes"]
    big = bytearray(300 << 20)  # touched pages: resident
    during = replica_memory()
    del big
    after = replica_memory()
    assert during["rss_bytes"] - first["rss_bytes"] > 250 << 20
    assert after["peak_rss_bytes"] >= during["rss_bytes"]
