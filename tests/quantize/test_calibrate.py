"""Calibration data for int8 (quantize/calibrate.py): bad data refused naming the problem, random
calibration only on request, none for dynamic int8."""

import numpy as np
import pytest



def test_dynamic_int8_refuses_calibration_options(tmp_path, cli, models):
    base = ["compile", models / "cnn.onnx", "--target", "x86-64", "-o", tmp_path / "a"]
    rc, out, err = cli(*base, "--quantize", "int8", "--dynamic", "--calibrator", "entropy")
    assert rc != 0 and "no calibration" in err and "Traceback" not in err
    rc, out, err = cli(*base, "--dynamic")
    assert rc != 0 and "only apply to --quantize int8" in err
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("case", ["missing", "name", "shape", "dtype", "empty", "emptydir", "nofile"])
def test_bad_calibration_data(tmp_path, cli, case, models):
    model = models / "cnn.onnx"
    good = np.zeros((4, 1, 3, 32, 32), np.float32)
    cal = tmp_path / "cal.npz"
    expect = {"missing": "needs calibration data", "name": "unknown input name", "shape": "has shape",
              "dtype": "has dtype", "empty": "is empty", "emptydir": "holds no .npy", "nofile": "does not exist"}
    if case == "name":
        np.savez(cal, images=good)
    elif case == "shape":
        np.savez(cal, image=np.zeros((4, 3, 16, 16), np.float32))
    elif case == "dtype":
        np.savez(cal, image=good.astype(np.int64))
    elif case == "empty":
        np.savez(cal, image=np.zeros((0, 1, 3, 32, 32), np.float32))
    elif case == "emptydir":
        cal = tmp_path / "caldir"
        cal.mkdir()
    elif case == "nofile":
        cal = tmp_path / "nothere.npz"
    args = ["compile", model, "--target", "x86-64", "-o", tmp_path / "a", "--quantize", "int8"]
    rc, out, err = cli(*args, *([] if case == "missing" else ["--calibration", cal]))
    assert rc != 0 and expect[case] in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()


def test_random_calibration_needs_the_flag_and_warns(tmp_path, cli, models):
    rc, out, err = cli("compile", models / "cnn.onnx", "--target", "x86-64", "-o", tmp_path / "a",
                       "--quantize", "int8", "--random-calibration", "--no-speed-check")
    assert rc == 0 and "meaningless" in out + err
    rc, out, err = cli("compile", models / "cnn.onnx", "--target", "x86-64", "-o", tmp_path / "b",
                       "--calibration", tmp_path / "x.npz")
    assert rc != 0 and "only apply to --quantize int8" in err
