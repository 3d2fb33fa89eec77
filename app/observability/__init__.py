"""What a clinic's IT person watches: structured logs with request ids (`logs`), Prometheus
metrics (`metrics`) and readiness checks (`readiness`)."""
