"""The Slurm gateway. Import from here: `from portal.slurm import gateway, errors, types`."""
