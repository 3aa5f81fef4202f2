"""What tests/conftest.py does to the collected tests."""
import pytest


def test_every_gpu_test_is_in_the_gpu_xdist_group(request):
    """The README's test command (pytest-xdist, ``--dist loadgroup``) runs the ``gpu`` tests on one worker: each
    carries ``xdist_group("gpu")`` and no other group."""
    gpu = [item for item in request.session.items if item.get_closest_marker("gpu")]
    if not gpu:
        pytest.skip("no gpu-marked test was collected in this run")
    groups = {item.nodeid: [m.args for m in item.iter_markers("xdist_group")] for item in gpu}
    assert all(args == [("gpu",)] for args in groups.values()), groups
