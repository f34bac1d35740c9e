"""The server-side cures for any `grpc.aio` server: a concurrency limit (static or adaptive) with
a bounded wait queue served by a discipline (fifo, codel, lifo), deadline-aware dropping, and
refusals with RESOURCE_EXHAUSTED and a pushback hint.

    LoadShedder       the server interceptor                      (interceptor.py)
    Capacity          slots in front of a bounded wait queue      (capacity.py; the DB's too)
    queueing          the queue disciplines                       (queueing.py; the DB's too)

Slots, waiting line and disciplines have one home, shared with the client's `limit` guard:
`herdlab.capacity` (the limiter) and `herdlab.queueing` (the line and its disciplines);
`herdlab.server.capacity` and `herdlab.server.queueing` build on and re-export them.
"""

from herdlab.queueing import NAMES as DISCIPLINES
from herdlab.queueing import AdaptiveLifo, CoDel, Discipline, Fifo, Shed, discipline
from herdlab.server.capacity import Capacity, Rejected
from herdlab.server.interceptor import LoadShedder, limit_algorithm

__all__ = [
    "DISCIPLINES",
    "AdaptiveLifo",
    "Capacity",
    "CoDel",
    "Discipline",
    "Fifo",
    "LoadShedder",
    "Rejected",
    "Shed",
    "discipline",
    "limit_algorithm",
]
