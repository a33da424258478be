"""pytest-meshcheck: prove that service-mesh resilience policies hold under real faults and load."""

from __future__ import annotations

__version__ = "0.1.0"
