"""Pool routing rules, without Ray: most spare capacity first, never a down member, bounded queues."""

from serve.pool import Member, Pool


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make_pool(**kw):
    clock = Clock()
    gpu = Member("gpu-vllm", "vllm", None, "d-gpu", max_ongoing=8, max_queued=4)
    cpu = Member("cpu-llamacpp", "llama.cpp", None, "d-cpu", max_ongoing=2, max_queued=2)
    return Pool("judge", [gpu, cpu], clock=clock, **kw), gpu, cpu, clock


def test_most_spare_capacity_goes_first():
    pool, gpu, cpu, _ = make_pool()
    assert pool.candidates()[0] is gpu or pool.candidates()[0] is cpu  # both idle: a tie
    gpu.outstanding = 6  # 2 of 8 free (25%)
    assert pool.candidates()[0] is cpu  # 2 of 2 free (100%)
    cpu.outstanding = 2  # full slots, but room in its queue
    assert [m.name for m in pool.candidates()] == ["gpu-vllm", "cpu-llamacpp"]


def test_members_past_their_bounds_are_not_candidates_and_the_pool_says_full():
    pool, gpu, cpu, _ = make_pool()
    gpu.outstanding = gpu.capacity + gpu.max_queued
    cpu.outstanding = cpu.capacity + cpu.max_queued
    assert pool.candidates() == []
    assert pool.state() == "full"


def test_a_member_whose_replica_died_is_skipped_then_comes_back():
    pool, gpu, cpu, clock = make_pool(down_s=5)
    pool.mark_down(cpu)
    assert pool.candidates() == [gpu] and cpu.failed == 1
    clock.now += 6
    assert cpu in pool.candidates()


def test_no_running_replica_means_down_until_the_controller_reports_one():
    pool, gpu, cpu, _ = make_pool()
    pool.set_replicas(gpu, 0)
    pool.mark_down(cpu)  # its replica died under a request ...
    pool.set_replicas(cpu, 0)  # ... and the controller saw it go
    assert pool.candidates() == [] and pool.state() == "down"
    pool.set_replicas(cpu, 1)  # a new replica is running: up again at once
    assert pool.candidates() == [cpu]
    pool.set_replicas(gpu, 3)
    assert gpu.capacity == 24
    states = pool.snapshot()
    assert [(s.name, s.engine, s.capacity, s.down) for s in states] == [
        ("gpu-vllm", "vllm", 24, False), ("cpu-llamacpp", "llama.cpp", 2, False)]


def test_a_pool_is_settled_only_while_every_member_is_up_and_none_is_starting():
    pool, gpu, cpu, clock = make_pool(down_s=5)
    assert pool.settled()
    pool.mark_down(cpu)  # died under a request: the controller will report what Serve does next
    assert not pool.settled() and pool.state() == "full"
    pool.set_replicas(cpu, 0, starting=1)
    pool.set_replicas(gpu, 0)
    assert not pool.settled() and pool.state() == "starting"  # a replacement is on its way
    pool.set_replicas(cpu, 0)
    assert pool.state() == "down"  # ... and now nothing is
    pool.set_replicas(cpu, 1)
    pool.set_replicas(gpu, 2, starting=1)  # up, and scaling up: a new replica is used once it runs
    assert not pool.settled()
    pool.set_replicas(gpu, 3)
    assert pool.settled()
    gpu.reported = False  # the controller has not answered yet
    assert not pool.settled()
