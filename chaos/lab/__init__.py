"""Running the lab: the services as processes or containers (`backends/`), the state file, ports,
Redis, a local Prometheus, the services' admin planes, the tether and the journal of actions."""
