"""The adaptive clip range follows the decrypted average update, within the preset's range."""

import numpy as np

from strategies.encrypted_fedavg import next_clip


def test_clip_is_a_power_of_two_margin_above_the_largest_value() -> None:
    average = [np.array([0.01, -0.03]), np.array([[0.002]])]
    assert next_clip(average, 8.0, 1.0) == 0.25  # 8 * 0.03 = 0.24 -> 2^-2


def test_clip_never_exceeds_the_preset_and_zero_margin_keeps_it() -> None:
    assert next_clip([np.array([5.0])], 8.0, 1.0) == 1.0
    assert next_clip([np.array([0.001])], 0.0, 1.0) == 1.0
    assert next_clip([np.zeros(3)], 8.0, 1.0) == 1.0
