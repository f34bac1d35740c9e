"""Reading gRPC's channelz in this process: channels by target and their subchannels; servers'
calls and the connections they hold.

channelz is served by grpcio's core (`grpc._cython.cygrpc`); grpcio-channelz only wraps these
same calls in a servicer, so reading them directly costs no RPC and no extra package. Nodes are
JSON documents as channelz renders them; a node that went away between two reads is `{}`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

_cygrpc: Any = importlib.import_module("grpc._cython.cygrpc")
# channelz pages hold up to 100 channels; a herd of 1024 channels needs 11.
MAX_PAGES = 1000
PAGE = 100  # server sockets asked for at once


def _node(get: Callable[[int], str], node_id: int) -> dict[str, Any]:
    try:
        text = get(node_id)
    except ValueError:
        return {}
    doc: dict[str, Any] = json.loads(text)
    return doc


def channels_to(target: str) -> dict[int, dict[str, Any]]:
    """This process's live channels whose target is `target`, by channelz id."""
    names = {target, f"dns:///{target}"}
    found: dict[int, dict[str, Any]] = {}
    start = 0
    for _ in range(MAX_PAGES):
        page = json.loads(_cygrpc.channelz_get_top_channels(start))
        for channel in page.get("channel", []):
            channel_id = int(channel["ref"]["channelId"])
            start = max(start, channel_id + 1)
            if channel["data"].get("target") in names:
                found[channel_id] = channel
        if page.get("end", True):
            break
    return found


def channel(channel_id: int) -> dict[str, Any]:
    """One channel's node (`{"channel": {...}}`), or {} if it is gone."""
    return _node(_cygrpc.channelz_get_channel, channel_id)


def subchannel(subchannel_id: int) -> dict[str, Any]:
    """One subchannel's node (`{"subchannel": {...}}`), or {} if it is gone."""
    return _node(_cygrpc.channelz_get_subchannel, subchannel_id)


def subchannel_ids(node: dict[str, Any]) -> list[int]:
    """The subchannels a channel node refers to."""
    return [int(ref["subchannelId"]) for ref in node.get("subchannelRef", [])]


def server_calls() -> dict[str, int]:
    """Calls of this process's servers as gRPC core counts them: started, succeeded, failed."""
    totals = {"started": 0, "succeeded": 0, "failed": 0}
    for server in _servers():
        data = server.get("data", {})
        for stage in totals:
            totals[stage] += int(data.get(f"calls{stage.capitalize()}", 0))
    return totals


def server_socket_ids() -> list[int]:
    """The channelz ids of the connections this process's servers hold now (listeners not
    included), in ascending order. gRPC core numbers a node when it is first read, so a
    connection listed for the first time has a larger id than every one listed before."""
    ids: list[int] = []
    for server in _servers():
        server_id = int(server["ref"]["serverId"])
        start = 0
        for _ in range(MAX_PAGES * MAX_PAGES):
            page = json.loads(_cygrpc.channelz_get_server_sockets(server_id, start, PAGE))
            refs = page.get("socketRef", [])
            for ref in refs:
                ids.append(int(ref["socketId"]))
            if page.get("end", True) or not refs:
                break
            start = int(refs[-1]["socketId"]) + 1
    return sorted(ids)


def socket(socket_id: int) -> dict[str, Any]:
    """One socket's node (`{"socket": {...}}`, with `security` set once a TLS handshake has
    completed on it), or {} if it is gone."""
    return _node(_cygrpc.channelz_get_socket, socket_id)


def _servers() -> list[dict[str, Any]]:
    """This process's server nodes."""
    found: list[dict[str, Any]] = []
    start = 0
    for _ in range(MAX_PAGES):
        page = json.loads(_cygrpc.channelz_get_servers(start))
        for server in page.get("server", []):
            found.append(server)
            start = max(start, int(server["ref"]["serverId"]) + 1)
        if page.get("end", True):
            break
    return found
