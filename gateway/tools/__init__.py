"""Operator tools outside the request path: probe, benchmarks, the nginx load-balancer configuration."""
