"""A dock's index sharded over Ray actors (optional extra ``distributed``: ``pip install 'lwengine[distributed]'``).

``import lwengine`` never needs Ray; importing this package does not either -- Ray is imported when a
:class:`ShardedIndex` is built.  See docs/distributed.md.
"""
from .shard import ShardWorker, shard_of
from .sharded import ShardedIndex, ShardError, ShardUnavailableError

__all__ = ["ShardedIndex", "ShardError", "ShardUnavailableError", "ShardWorker", "shard_of"]
