"""The one send loop of the batch writer, the strict writer and the lookup.

Why one: each of them sends a batch's requests (BatchWriteItem, TransactWriteItems,
BatchGetItem) and had its own copy of how they go out -- in groups through one
client call while the pacer is calm, else one request at a time over the lanes --
next to the request's own loop (retries, unprocessed items, bisection).  Here
that decision is made once; an operation only says what its requests are
(`Requests`): what one costs, its body, what a first answer means, and how a
request goes on until it is done (`follow`).

How a batch's requests go out (`SendLoop.send`):

* in groups, each handed to the client at once (`DynamoClient.post_many`), when
  the client sends a group side by side in one call (`sends_side_by_side`: the
  signed HTTP client on plain TCP), the requests may overlap, and the pacer is
  calm (`Pacer.unpaced`: a paced request goes alone, settled before the next).
  A group's slots are taken together (`Pacer.acquire_group`), its clean answers
  settled together (`Pacer.settle_clean`), the others followed up request by
  request;
* otherwise request by request, each its own call, spread over the batch's lanes
  (`importer.dynamodb.request_pool`; in order when they must not overlap) -- so a client
  that sends one call at a time (boto3, TLS) still has as many in flight.

Before a group is sent, and after its answers, the run's coordinator is asked:
once any worker met a fatal error, every later send raises it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from importer.coordinator import RunCoordinator
from importer.dynamodb.api import DynamoClient, Reply
from importer.dynamodb.errors import DynamoError
from importer.dynamodb.pacing import Pacer
from importer.dynamodb.request_pool import Lanes, Waits

__all__ = ["First", "Requests", "SendLoop", "Sent", "Taken"]

P = TypeVar("P")
R = TypeVar("R")
P_contra = TypeVar("P_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)

#: A request's first answer, made by a group: the answer, the units sent, when the slot
#: was taken -- what `Requests.follow` goes on from.
First = tuple[Reply | DynamoError, int, float | None]


class Taken(enum.Enum):
    """What a group's answer to one request leaves to do."""

    #: everything taken: counted, and settled with the group's other clean answers
    CLEAN = "clean"
    #: followed up at once on the sending thread (an answer that needs no wait)
    HERE = "here"
    #: followed up beside the others, over the lanes (retries and their waits)
    LANES = "lanes"


class Requests(Protocol[P_contra, R_co]):
    """One operation's requests, as the send loop sends them."""

    #: the DynamoDB operation, for `post_many`
    operation: str

    def cost(self, part: P_contra) -> tuple[int, int]:
        """(items, units) the request is paced for."""
        ...

    def body(self, part: P_contra) -> bytes: ...

    def answered(self, part: P_contra, answer: Reply | DynamoError) -> Taken:
        """What a group's first answer to `part` leaves to do."""
        ...

    def follow(self, part: P_contra, first: First | None, waits: Waits | None) -> R_co:
        """The request until it is done: its own loop of sends, retries and settles,
        from its first answer when a group made it (else from its first send)."""
        ...


@dataclass(slots=True)
class Sent(Generic[R]):
    """What `SendLoop.send` did: the results of the requests followed up, in order,
    and the clean answers of groups (requests, and items in them)."""

    results: list[R] = field(default_factory=list)
    clean: int = 0
    clean_items: int = 0


class SendLoop:
    """The send loop over one client, pacer, coordinator and (optional) lanes."""

    def __init__(
        self,
        client: DynamoClient,
        pacer: Pacer,
        coordinator: RunCoordinator,
        lanes: Lanes | None = None,
    ) -> None:
        self.client = client
        self.pacer = pacer
        self.coordinator = coordinator
        self.lanes = lanes

    def send(
        self,
        requests: Requests[P, R],
        parts: Sequence[P],
        *,
        side_by_side: bool = True,
        one_group: bool = False,
    ) -> Sent[R]:
        """Send every part until each is done (see the module doc).

        `side_by_side`: the parts may overlap (no key in two of them); else they go
        one after another, each done before the next starts.  Without lanes, parts
        go one after another -- unless `one_group`: then, while the pacer is calm,
        all of them go in one group (the strict writer's transactions).
        """
        sent: Sent[R] = Sent()
        lanes = self.lanes
        start, n = 0, len(parts)
        if (
            n > 1
            and side_by_side
            and self.client.sends_side_by_side
            and (lanes is not None or one_group)
        ):
            size = n if one_group or lanes is None else lanes.group_size()
            while start < n and self.pacer.unpaced():
                self._group(requests, parts[start : start + size], sent)
                start += size
        rest = parts[start:] if start else parts
        if not rest:
            return sent
        follow = requests.follow
        if lanes is None:
            sent.results.extend([follow(p, None, None) for p in rest])
            return sent
        in_order = not (side_by_side and lanes.lanes_now() > 1)
        sent.results.extend(
            lanes.run(lambda p, waits: follow(p, None, waits), rest, in_order=in_order)
        )
        return sent

    def _group(self, requests: Requests[P, R], parts: Sequence[P], sent: Sent[R]) -> None:
        """One group: slots taken together, the bodies handed to the client in one
        `post_many`, then each answer as `Requests.answered` says."""
        pacer, lanes = self.pacer, self.lanes
        started, cpu, waits = time.perf_counter(), time.thread_time(), Waits()
        self.coordinator.raise_if_failed()
        costs = [requests.cost(p) for p in parts]
        taken = pacer.acquire_group(costs, waits)
        answers = self.client.post_many(requests.operation, [requests.body(p) for p in parts])
        if lanes is not None:
            lanes.observe_group(started, cpu, waits)
        self.coordinator.raise_if_failed()
        clean: list[tuple[int, int]] = []  # settled together
        here: list[tuple[P, First]] = []
        later: list[tuple[P, First]] = []  # retries and their waits: side by side
        for part, cost, sent_at, answer in zip(parts, costs, taken, answers, strict=True):
            what = requests.answered(part, answer)
            if what is Taken.CLEAN:
                clean.append(cost)
                sent.clean += 1
                sent.clean_items += cost[0]
            elif what is Taken.HERE:
                here.append((part, (answer, cost[1], sent_at)))
            else:
                later.append((part, (answer, cost[1], sent_at)))
        pacer.settle_clean(clean)
        follow = requests.follow
        sent.results.extend([follow(p, first, None) for p, first in here])
        if not later:
            return
        if lanes is None:
            sent.results.extend([follow(p, first, None) for p, first in later])
        else:
            sent.results.extend(lanes.run(lambda pf, w: follow(pf[0], pf[1], w), later))
