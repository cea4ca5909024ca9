"""Node health sensors for Slurm: Prolog, Epilog and HealthCheckProgram.

Standard library plus (optionally) pynvml, and no Django: these run on every compute node,
before and after every job and every few seconds, so each run must stay well under 300 ms.
Modules avoid heavy imports (typing, dataclasses, http.client, email) for that reason.
See slurm_plugins/README.md for installing them on a real cluster.
"""
