"""Fault injection with real processes: ``tps serve``, ``tps simulate``, ``influxd``."""
