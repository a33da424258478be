"""Local mesh context: real Envoy, echo workloads and Prometheus as processes on loopback."""
