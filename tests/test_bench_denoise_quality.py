"""scripts/bench_denoise_quality.py: its section from amcfd-denoise's summary, and its bad input."""
from __future__ import annotations

from conftest import load_script

tool = load_script("bench_denoise_quality")


def _scores(pairs: dict) -> dict:
    n = len(pairs)
    return {"images": n, "per_image": pairs,
            **{f"{w} {m}": sum(p[i] for p in pairs.values()) / n if m == "PSNR" else 0.5
               for i, w in enumerate(("input", "output")) for m in ("PSNR", "SSIM", "SSIM-MATLAB")}}


def test_the_section_has_the_means_the_gain_over_the_core_and_every_photo():
    summary = {"teacher": {"steps": 100, "minutes": 1.5}, "coarse": {"steps": 50, "minutes": None},
               "scores": _scores({"a.png": (30.0, 33.0), "b.png": (20.0, 19.0)}),
               "classical": _scores({"a.png": (30.0, 34.0), "b.png": (20.0, 18.0)}), "denoise": {}}
    body = tool.report(summary, 15)
    assert "teacher 100 steps / 1.5 min, coarse 50 steps / kept" in body
    assert "| amcfd-denoise | 26.00 | 0.5000 | 0.5000 | 1 |" in body          # b.png: 1 dB below its input
    assert "| the classical core | 26.00 |" in body
    assert "against the classical core: +0.00 dB (mean PSNR); better on 1 of 2 photos" in body
    assert "| b.png | 20.00 | 19.00 | 18.00 |" in body


def test_a_set_without_noisy_and_clean_is_a_one_line_error(tmp_path, capsys):
    assert tool.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs noisy/ and clean/" in err[0]
