"""Watching deployments: outcome events, A/B statistics and drift/quality signals. Pure functions here;
the registry queries that feed them live in `tunesmith.registry`."""
