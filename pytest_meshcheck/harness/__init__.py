"""The verification harness behind the fixtures: policies, chaos, load and scenario records."""
