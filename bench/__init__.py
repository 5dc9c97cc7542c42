"""Benchmarks: printed figures and ratios against a baseline run in the same process.

``python -m bench`` runs them all; ``python -m bench NAME…`` runs some. See bench/README.md.
"""

BENCHMARKS = ("sandbox_startup", "rolling_restart", "audit_wall", "authflow_concurrency", "ui_latency", "image_copy",
              "fleet_audit", "rollback")
