"""The partition limits form validation reads, cached per cluster."""

from __future__ import annotations

from django.core.cache import cache

from portal.jobs import cluster_info


def test_the_limits_come_from_slurm_and_each_cluster_keeps_its_own_copy(cluster, settings):
    limits = cluster_info.partitions()
    assert {"gpu", "cpu"} <= set(limits) and cluster_info.default_partition(limits) == "gpu"
    assert cache.get(cluster_info.CACHE_KEY.format(cluster=settings.SLURM["CLUSTER"])) == limits
    # A portal of another cluster on the same Redis (or a bench switching clusters) must not be
    # handed these: it would refuse its own partitions as unknown.
    own, other = settings.SLURM["CLUSTER"], cluster_info.CACHE_KEY.format(cluster="elsewhere")
    cache.set(other, {"only-there": limits["gpu"]}, 60)
    try:
        settings.SLURM = {**settings.SLURM, "CLUSTER": "elsewhere"}
        cluster_info.forget()
        assert set(cluster_info.partitions()) == {"only-there"}
        settings.SLURM = {**settings.SLURM, "CLUSTER": own}
        cluster_info.forget()
        assert cluster_info.partitions() == limits
    finally:
        cache.delete(other)
        cluster_info.forget()
