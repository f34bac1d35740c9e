"""The lab's gRPC contracts (`*.proto`) and the stubs generated from them.

Regenerate after editing a `.proto` with `python -m protos.generate`; a test fails when the
committed stubs differ from what grpcio-tools makes of the `.proto` files.
"""
