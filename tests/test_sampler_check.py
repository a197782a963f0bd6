"""sampler.num_instances against images per identity (mpn_plugin/data/sampler_check.py)."""
from mpn_plugin.data.sampler_check import identity_sampler_warning, images_per_identity


def items(per_id):
    return [(f"{pid}_{i}.jpg", pid, i % 2) for pid, n in enumerate(per_id) for i in range(n)]


def test_images_per_identity_counts_by_pid():
    assert images_per_identity(items([4, 1, 3])) == {0: 4, 1: 1, 2: 3}


def test_four_instances_on_four_images_per_identity_warns_and_suggests_two():
    msg = identity_sampler_warning(items([4, 4, 5, 3]), num_instances=4)
    assert "sampler.num_instances=4" in msg and "median of 4" in msg
    assert "sampler.num_instances 2" in msg and "1 batch(es)" in msg


def test_no_warning_when_each_identity_is_in_two_batches():
    assert identity_sampler_warning(items([4, 4, 5, 3]), num_instances=2) is None
    assert identity_sampler_warning(items([17] * 5), num_instances=8) is None   # Market-like
    assert identity_sampler_warning([], num_instances=4) is None
