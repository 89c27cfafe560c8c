"""Feed side of TPS: wire protocols (``protocol``) and the simulator (``simulator``)."""
