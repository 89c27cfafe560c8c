"""History at any range: rollups, the query planner, the hot tier, backfill.

- :mod:`tps.history.buckets`: tiers, epoch-aligned buckets, aggregates, the series ladder.
- :mod:`tps.history.planner`: coverage intervals and the split of a window into raw edges
  and whole buckets (pure).
- :mod:`tps.history.rollup`: the writer's open buckets, folded on acknowledgement.
- :mod:`tps.history.hot`: the newest readings and their rollups in compact memory.
- :mod:`tps.history.answers`: statistics and series from memory and/or the store.
- :mod:`tps.history.backfill`: computing missing rollups from stored raw readings.
"""
