"""Chaos: faults at the destination workloads and Istio client-side fault injection."""
