"""Fixtures the node-side tests of issue 9 share (defined in nodeside_support)."""

from tests.nodes.nodeside_support import evacuations, slurm_jobs  # noqa: F401
