"""Peak search: frames whose total count rate is far from the rest of the series."""

import numpy as np


def test_odd_frames_are_the_ones_far_from_the_series():
    from gpudiffuse.masking.peaks import odd_frames

    rng = np.random.default_rng(0)
    rates = 1000.0 * (1 + 0.01 * rng.normal(size=60)) * np.linspace(1.0, 0.8, 60)  # decay is not odd
    rates[[7, 30]] = [0.0, 1600.0]  # beam loss, a frame of another run
    np.testing.assert_array_equal(odd_frames(rates), [7, 30])
    assert len(odd_frames(rates[:4])) == 0  # too few frames to judge


def test_a_blank_frame_is_named_in_a_warning(tiny_copy, tmp_path, caplog):
    import logging

    import fabio

    from gpudiffuse.cli import main

    frame = sorted((tiny_copy / "frames").glob("*.cbf"))[6]
    image = fabio.open(str(frame))
    fabio.cbfimage.CbfImage(data=np.zeros_like(image.data), header=image.header).write(str(frame))
    with caplog.at_level(logging.WARNING):
        assert main(["process", "--no-report", "--xds", str(tiny_copy), "-o", str(tmp_path / "out"), "--device", "cpu",
                     "--scale", "none"]) == 0
    assert "1 frame(s) whose total count rate is far from the series'" in caplog.text
    assert f"{frame} (0 /s)" in caplog.text
