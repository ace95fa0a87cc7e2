"""The Lambda-facing edge: API Gateway events, proxy responses in the contract's shape, routes, runtime tuning."""
