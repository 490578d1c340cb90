import numpy as np
import pytest

from pi0_ros.core.interpolation import fractional_index, interpolate_rows, lerp


def test_lerp_goes_from_start_to_end():
    assert lerp(2.0, 4.0, 0.0) == 2.0 and lerp(2.0, 4.0, 0.25) == 2.5 and lerp(2.0, 4.0, 1.0) == 4.0
    np.testing.assert_allclose(lerp(np.zeros(2), np.array([1.0, -1.0]), 0.5), [0.5, -0.5])


def test_rows_are_interpolated_and_clamped_at_the_ends():
    rows = np.array([[0.0, 10.0], [1.0, 20.0], [3.0, 40.0]])  # [K=3, 2]
    np.testing.assert_allclose(interpolate_rows(rows, 0.5), [0.5, 15.0])
    np.testing.assert_allclose(interpolate_rows(rows, 1.5), [2.0, 30.0])
    np.testing.assert_allclose(interpolate_rows(rows, -3.0), rows[0])
    np.testing.assert_allclose(interpolate_rows(rows, 7.0), rows[2])
    assert not np.shares_memory(interpolate_rows(rows, 2.0), rows), "a new array, never a view"


@pytest.mark.parametrize("t, index", [(-1.0, 0.0), (0.0, 0.0), (0.5, 0.25), (2.0, 1.0), (3.0, 1.5), (9.0, 2.0)])
def test_fractional_index_of_uneven_times(t, index):
    assert fractional_index(np.array([0.0, 2.0, 4.0]), t) == pytest.approx(index)
