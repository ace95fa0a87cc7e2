"""Exact limits: the GCRA arithmetic and the admission decisions made against the counters table."""
