"""The lab's deliberately slow database: latency model, real capacity, exact arrival record."""
