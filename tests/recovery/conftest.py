from tests.recovery.support import fresh_cycles, own_nodes, slurm_jobs, vision  # noqa: F401
from tests.slurm_plugins.signed_reports import master_key  # noqa: F401
