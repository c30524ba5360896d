"""A judge pool: the members serving one model id, and which one should take the next request.

The ingress sends each request to the member with the most spare capacity - its capacity
(running replicas x max_ongoing_requests) minus the requests this ingress has out to it - and
never to a member that is down. A member is down while it has no running replica (as Serve's
controller reports it) or for a moment after one of its replicas died under a request. When
every member is full or down, the caller is told to come back later instead of queueing.

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
    outstanding: int = 0  # requests this ingress has out to the member
    down_until: float = 0.0
    served: int = 0
    failed: int = 0

    @property
    def capacity(self) -> int:
        return self.replicas * self.max_ongoing

    def spare(self) -> int:
        return self.capacity - self.outstanding

    def accepts(self) -> bool:
        """Room for one more: in a replica's slots, or in the deployment's bounded queue."""
        return self.outstanding < self.capacity + self.max_queued

    def is_down(self, now: float) -> bool:
        return self.replicas == 0 or now < self.down_until


@dataclass
class Pool:
    model_id: str
    members: List[Member] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    # How long a member whose replica just died is skipped, unless the controller says it is back.
    down_s: float = 5.0

    def candidates(self) -> List[Member]:
        """Up members with room, most spare capacity first (ties: fewest served, for spread)."""
        now = self.clock()
        up = [m for m in self.members if not m.is_down(now) and m.accepts()]
        return sorted(up, key=lambda m: (-m.spare() / max(m.capacity, 1), m.served))

    def state(self) -> str:
        """'full' when some member is up but all up members are at their bounds, else 'down'."""
        now = self.clock()
        return "full" if any(not m.is_down(now) for m in self.members) else "down"

    def mark_down(self, member: Member) -> None:
        member.down_until = self.clock() + self.down_s
        member.failed += 1

    def set_replicas(self, member: Member, running: int) -> None:
        """The controller's count of running replicas; a member back with replicas is up again."""
        if running > 0 and member.replicas == 0:
            member.down_until = 0.0
        member.replicas = running

    def snapshot(self) -> List[MemberState]:
        now = self.clock()
        return [
            MemberState(name=m.name, engine=m.engine, replicas=m.replicas, capacity=m.capacity,
                        outstanding=m.outstanding, down=m.is_down(now), served=m.served, failed=m.failed)
            for m in self.members
        ]

    def member(self, name: str) -> Optional[Member]:
        return next((m for m in self.members if m.name == name), None)
