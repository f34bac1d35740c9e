"""The lab's TTL cache: bounded store, single-flight coalescer, DB client with a retry policy."""
