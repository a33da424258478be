"""Differential fidelity: hypothesis drives random policies through the model and through real Envoy."""
