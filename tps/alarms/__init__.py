"""Limits and alarms (issue 11): plain policy code, no threads.

``limits`` (the JSON shape and its rules), ``checker`` (per-stream evaluation in the
ingest path), ``model`` (snapshots, events), ``lifecycle`` (the Yamcs-style state
machine), ``alertmanager`` (payloads and the delivery thread).
"""
