"""What the lab's services and its controller share: retry policies, keys and values, exact
event records, gRPC options, metrics serving and configuration parsing."""
