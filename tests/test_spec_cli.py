"""``lwengine spec fit`` / ``lwengine spec show``."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lwengine import RKMESpec
from lwengine.cli import main


@pytest.fixture()
def data(tmp_path):
    X = np.random.default_rng(0).standard_normal((60, 3)).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    with open(tmp_path / "X.csv", "w") as f:
        f.write("a,b,c\n")
        for row in X:
            f.write(",".join(repr(float(v)) for v in row) + "\n")
    return X


def test_fit_npy_matches_api(tmp_path, data, capsys):
    out = tmp_path / "s.json"
    rc = main(["spec", "fit", str(tmp_path / "X.npy"), "--out", str(out), "--K", "7", "--seed", "3",
               "--gamma", "0.2", "--steps", "2", "--step-size", "0.05"])
    assert rc == 0 and "K=7" in capsys.readouterr().out
    expected = RKMESpec.fit(data, K=7, seed=3, gamma=0.2, steps=2, step_size=0.05)
    got = RKMESpec.load(out)
    np.testing.assert_array_equal(got.z, expected.z)
    np.testing.assert_array_equal(got.beta, expected.beta)


def test_fit_csv_with_header_and_options(tmp_path, data):
    out = tmp_path / "s.json"
    assert main(["spec", "fit", str(tmp_path / "X.csv"), "--out", str(out), "--no-reduce"]) == 0
    s = RKMESpec.load(out)
    np.testing.assert_array_equal(s.z, data.astype(np.float64))
    z0 = data[:5].astype(np.float64)
    np.save(tmp_path / "z0.npy", z0)
    assert main(["spec", "fit", str(tmp_path / "X.npy"), "--out", str(out), "--init-z", str(tmp_path / "z0.npy"),
                 "--signed-beta", "--steps", "0"]) == 0
    s = RKMESpec.load(out)
    assert s.K == 5 and json.loads(out.read_text())["type"] == "RKMETableSpecification"
    assert main(["spec", "fit", str(tmp_path / "X.npy"), "--out", str(out), "--update", "mmd-descent",
                 "--K", "6", "--seed", "1"]) == 0


def test_show(tmp_path, data, capsys):
    out = tmp_path / "s.json"
    RKMESpec.fit(data, K=4, seed=0).save(out)
    assert main(["spec", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "K:           4" in text and "self_dist:   0" in text


@pytest.mark.parametrize("content, name, match", [
    ("a,b\n1,x\n", "bad.csv", "not numeric"),
    ("1,2\n3\n", "ragged.csv", "columns"),
    ("a,b\n", "empty.csv", "no data rows"),
    ("hello", "data.txt2", "unsupported data format"),
    ("a,b\nnan,1\nnan,2\n", "nancol.csv", "All values in column 0 are exceptional"),
])
def test_bad_input_exits_2(tmp_path, capsys, content, name, match):
    path = tmp_path / name
    path.write_text(content)
    assert main(["spec", "fit", str(path), "--out", str(tmp_path / "s.json")]) == 2
    assert match in capsys.readouterr().err


def test_missing_file_and_bad_spec(tmp_path, capsys):
    assert main(["spec", "fit", str(tmp_path / "none.npy"), "--out", str(tmp_path / "s.json")]) == 2
    (tmp_path / "bad.json").write_text("{")
    assert main(["spec", "show", str(tmp_path / "bad.json")]) == 2
    assert "invalid JSON" in capsys.readouterr().err
