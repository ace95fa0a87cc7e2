"""What Bulwark tells operators: structured logs with redaction, EMF metrics, tracing, and the hash-chained audit."""
