"""Several Relay nodes on one PostgreSQL database: node identity, heartbeats, stream leases
and the takeover of a dead node's sessions (issue 19). Sits on `relay.store`; serves
`relay.streams` through small callables, never importing it."""

from relay.cluster.node import (
    ClusterNode,
    default_advertise_url,
    default_node_id,
)
from relay.cluster.notices import StreamNotices

__all__ = ["ClusterNode", "StreamNotices", "default_advertise_url", "default_node_id"]
