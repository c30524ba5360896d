"""A judge pool: the members serving one model id, and which one should take the next request.

The ingress sends each request to the member with the most spare capacity - its capacity
(running replicas x max_ongoing_requests) minus the requests this ingress has out to it - and
never to a member that is down. A member is down while it has no running replica (as Serve's
controller reports it) or for a moment after one of its replicas died under a request. When
every member is full or down, the caller is told to come back later instead of queueing. A down
member is *coming back* while Serve starts a replica for it (or one just died, which Serve
replaces): then the caller is told when to return, and a job waits instead of failing its rows.

A member that may scale to zero (autoscaling min_replicas 0) and has no replica is *cold*, not
down: it is the last resort, sent a request only when no running member can take it. Serve then
queues that request while it starts a replica - without it, Serve would never see load and the
member would never scale up again. A member may also ask for a pause (an external server's
429 + Retry-After): it is skipped until then.

Pure Python, no Ray: the ingress feeds it facts (requests out, replica counts, failures), and
reaches every member, whatever its engine, through one `MemberClient`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Protocol

from serve.wire import MemberState


class MemberClient(Protocol):
    """How the router talks to a member: a Serve deployment (`serve.members.DeploymentMember`) or
    an external OpenAI server (`serve.upstream.Upstream`)."""

    async def call(self, method: str, body: dict) -> dict:
        """Answer `method` ("completions", "chat", "tokenize") with {"status", "body"}; raise
        `serve.errors.MemberFull` or `MemberGone` when the member cannot take the request."""

    async def card(self) -> dict:
        """The member's /v1/models entry (`serve.wire.model_card`)."""

    async def stats(self) -> Optional[dict]:
        """Engine statistics from one of its replicas; None when it has none."""


@dataclass(eq=False)
class Member:
    name: str
    engine: str
    client: MemberClient
    deployment: Optional[str]  # its Serve deployment; None for an external server
    max_ongoing: int
    max_queued: int
    context_length: int = 0
    replicas: int = 1  # running replicas, refreshed from the controller
    starting: int = 0  # replicas Serve is starting (a replacement, a scale-up), from the controller
    outstanding: int = 0  # requests this ingress has out to the member
    down_until: float = 0.0
    served: int = 0
    failed: int = 0
    # autoscaling min_replicas 0: with no replica it is cold (a request starts one), not down.
    scales_to_zero: bool = False
    # Whether the replica count is known (Serve's controller reported it); until then `replicas`
    # is the builder's guess, and the member does not count for readiness.
    reported: bool = True
    paused_until: float = 0.0  # the member asked for no requests until then (Retry-After)

    @property
    def capacity(self) -> int:
        return self.replicas * self.max_ongoing

    def spare(self) -> int:
        return self.capacity - self.outstanding

    def accepts(self) -> bool:
        """Room for one more: in a replica's slots, or in the deployment's bounded queue (a cold
        member takes at least one request, the one that wakes it)."""
        if self.replicas == 0:
            return self.outstanding < max(self.max_queued, 1)
        return self.outstanding < self.capacity + self.max_queued

    def is_down(self, now: float) -> bool:
        return self.replicas == 0 or now < self.down_until

    def is_cold(self, now: float) -> bool:
        return self.scales_to_zero and self.replicas == 0 and now >= self.down_until

    def is_live(self, now: float) -> bool:
        """Up, or cold (a request wakes it): not down."""
        return not self.is_down(now) or self.is_cold(now)

    def is_coming_back(self, now: float) -> bool:
        """Down, but Serve is starting a replica for it, or one of its replicas died just now
        (Serve replaces it). An external server that failed is not: nothing restarts it."""
        return self.starting > 0 or (self.deployment is not None and self.replicas > 0 and now < self.down_until)

    def can_answer(self, now: float) -> bool:
        """Up or cold, with a known replica count: ready to be sent a request (if it has room)."""
        return self.reported and self.is_live(now)


@dataclass
class Pool:
    model_id: str
    members: List[Member] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    # How long a member whose replica just died is skipped, unless the controller says it is back.
    down_s: float = 5.0

    def candidates(self) -> List[Member]:
        """Up members with room, most spare capacity first (ties: fewest served, for spread);
        then cold members with room, to wake one when no running member can take the request."""
        now = self.clock()
        ready = [m for m in self.members if now >= m.paused_until and m.accepts()]
        up = [m for m in ready if not m.is_down(now)]
        cold = [m for m in ready if m.is_cold(now)]
        return (sorted(up, key=lambda m: (-m.spare() / max(m.capacity, 1), m.served))
                + sorted(cold, key=lambda m: (m.outstanding, m.served)))

    def state(self) -> str:
        """'full' when some member is up (or cold) but none can take a request now; else
        'starting' when some member is coming back, else 'down'."""
        now = self.clock()
        if any(m.is_live(now) for m in self.members):
            return "full"
        return "starting" if any(m.is_coming_back(now) for m in self.members) else "down"

    def ready(self) -> bool:
        """Some member can answer (readiness): up or cold, as the controller reported it."""
        now = self.clock()
        return any(m.can_answer(now) for m in self.members)

    def settled(self) -> bool:
        """Every member reported, up (or cold) and not starting a replica: nothing about to change."""
        now = self.clock()
        return all(m.can_answer(now) and m.starting == 0 for m in self.members)

    def context_length(self) -> int:
        """The smallest context of its members (0: none stated): what any request must fit."""
        return min((m.context_length for m in self.members if m.context_length > 0), default=0)

    def pause_left(self) -> float:
        """Seconds until a member may be asked again when every live member asked for a pause
        (0 when some live member did not: it may have room again any moment)."""
        now = self.clock()
        live = [m for m in self.members if m.is_live(now)]
        if not live or any(m.paused_until <= now for m in live):
            return 0.0
        return min(m.paused_until - now for m in live)

    def mark_down(self, member: Member, seconds: Optional[float] = None) -> None:
        member.down_until = self.clock() + (self.down_s if seconds is None else max(seconds, self.down_s))
        member.failed += 1

    def pause(self, member: Member, seconds: float) -> None:
        """Skip the member for `seconds` (it is busy, not broken: it is not counted as failed)."""
        member.paused_until = max(member.paused_until, self.clock() + seconds)

    def set_replicas(self, member: Member, running: int, starting: int = 0) -> None:
        """The controller's count of running (and starting) replicas; a member back with replicas
        is up again."""
        if running > 0 and member.replicas == 0:
            member.down_until = 0.0
        member.replicas, member.starting = running, starting
        member.reported = True

    def snapshot(self) -> List[MemberState]:
        now = self.clock()
        return [
            MemberState(name=m.name, engine=m.engine, replicas=m.replicas, capacity=m.capacity,
                        outstanding=m.outstanding, down=not m.is_live(now), served=m.served,
                        failed=m.failed, cold=m.is_cold(now))
            for m in self.members
        ]

    def member(self, name: str) -> Optional[Member]:
        return next((m for m in self.members if m.name == name), None)
