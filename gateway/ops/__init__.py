"""What operators watch: Prometheus metrics, health and readiness, the status page, the access log."""
