"""The data scripts end to end on tiny official-layout fixtures (denoisers passed in, no checkpoint)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from conftest import load_script
from test_data_dnd import BOXES, make_dnd
from test_data_sidd import make_blocks, make_sidd_medium

from amcfd.data.sidd import SIDDMediumTrain
from amcfd.data.submission import read_sidd_submission_csv, read_sidd_submission_mat

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_prep_sidd_cli(tmp_path, capsys):
    medium, _ = make_sidd_medium(tmp_path, np.random.default_rng(0))
    prep = load_script("prep_sidd")
    out = tmp_path / "tiles"
    assert prep.main(["--input", str(medium), "--output", str(out), "--size", "16", "--stride", "8",
                      "--workers", "0"]) == 0
    assert "tiles listed in" in capsys.readouterr().out
    assert len(SIDDMediumTrain(out, crop_size=8)) == 4 * 4 * 6
    assert prep.main(["--input", str(tmp_path / "none"), "--output", str(out)]) == 2
    assert "no SIDD-Medium frames" in capsys.readouterr().err


def test_sidd_submission_cli(tmp_path, capsys):
    noisy, _ = make_blocks(np.random.default_rng(1), n_img=2, n_blk=32, size=8)
    scipy.io.savemat(tmp_path / "BenchmarkNoisyBlocksSrgb.mat", {"BenchmarkNoisyBlocksSrgb": noisy})
    script = load_script("submission")
    out = tmp_path / "sub"
    code = script.main(["--format", "sidd", "--noisy_mat", str(tmp_path / "BenchmarkNoisyBlocksSrgb.mat"),
                        "--out", str(out), "--method_name", "identity"], denoise_fn=lambda x: x)
    assert code == 0
    np.testing.assert_array_equal(read_sidd_submission_csv(out / "SubmitSrgb.csv", block_shape=(8, 8, 3)), noisy)
    np.testing.assert_array_equal(read_sidd_submission_mat(out / "SubmitSrgb.mat"), noisy)
    assert script.main(["--format", "sidd", "--noisy_mat", str(tmp_path / "missing.mat"), "--out", str(out)],
                       denoise_fn=lambda x: x) == 2
    assert "missing.mat" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--format", "sidd"])                      # -opt is required without a denoiser


def test_dnd_submission_cli(tmp_path, capsys):
    make_dnd(tmp_path / "dnd", np.random.default_rng(2))
    script = load_script("submission")
    out = tmp_path / "out"
    assert script.main(["--format", "dnd", "--root", str(tmp_path / "dnd"), "--out", str(out)],
                       denoise_fn=lambda x: 1 - x) == 0
    bundled = sorted(p.name for p in (out / "bundled").iterdir())
    assert bundled == ["0001.mat", "0002.mat"]
    cells = scipy.io.loadmat(out / "bundled" / "0001.mat")["Idenoised"]
    r1, c1, r2, c2 = BOXES[0][2]
    assert cells.shape == (1, 3) and cells[0, 2].shape == (r2 - r1 + 1, c2 - c1 + 1, 3)
    assert script.main(["--format", "dnd", "--root", str(tmp_path / "nowhere"), "--out", str(out)],
                       denoise_fn=lambda x: x) == 2
    assert "nowhere" in capsys.readouterr().err
