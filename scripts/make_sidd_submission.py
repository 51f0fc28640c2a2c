"""Denoise the SIDD sRGB benchmark blocks and write both submission formats.

    python scripts/make_sidd_submission.py -opt options/test/X.yml \
        --noisy_mat datasets/SIDD/BenchmarkNoisyBlocksSrgb.mat [--out results/X/sidd_benchmark]

The denoiser is the trained model named by the option file (``path.pretrain_network``), with its
test-time settings (``method``, ``test.tile``). Without ``--noisy_mat`` the ``noisy_mat`` of the first
``SIDDBlocks`` entry under ``datasets`` is used. Outputs (in ``--out``, default
``<results_root>/<name>/sidd_benchmark``):

- ``SubmitSrgb.csv``: for the public Kaggle competition "sidd-benchmark-srgb-psnr"
  (kaggle.com/competitions/sidd-benchmark-srgb-psnr), which replaced the SIDD website's upload.
  Header ``ID,BLOCK``; 1280 rows; ``ID`` = image * 32 + block (0..1279, the order of the 40 x 32
  blocks in ``BenchmarkNoisyBlocksSrgb.mat``); ``BLOCK`` = base64 of the denoised block's raw bytes,
  uint8, C order, 256 x 256 x 3 (196,608 bytes). Facts from the competition's starter code as
  reproduced in public repositories (e.g. AM-BSN's ``SIDD_benchmark_submission.py``: numpy
  ``tobytes`` -> ``base64.b64encode``; columns ``ID`` and ``BLOCK``).
- ``SubmitSrgb.mat``: the original SIDD benchmark layout (the SIDD MATLAB demo's ``save``):
  ``DenoisedBlocksSrgb`` (40 x 32 cell of 256 x 256 x 3 uint8), ``TimeMPSrgb`` (seconds per
  megapixel, measured here) and ``OptionalData`` (MethodName, Authors, PaperTitle, Venue).

Outputs are quantised as the metrics are: round(clip(x, 0, 1) * 255).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amcfd.cli import benchmark_inputs, benchmark_parser  # noqa: E402
from amcfd.data.sidd import load_sidd_blocks  # noqa: E402
from amcfd.data.submission import denoise_sidd_blocks, write_sidd_submission  # noqa: E402
from amcfd.registry import ConfigError  # noqa: E402


def main(argv=None, denoise_fn=None) -> int:
    """CLI; tests pass ``denoise_fn`` (then ``--noisy_mat`` and ``--out`` replace the option file)."""
    parser = benchmark_parser(__doc__.split("\n")[0], "noisy_mat", "BenchmarkNoisyBlocksSrgb.mat")
    for field in ("method_name", "authors", "paper_title", "venue"):
        parser.add_argument(f"--{field}", default="", help=f"OptionalData.{field} in SubmitSrgb.mat")
    args = parser.parse_args(argv)
    try:
        denoise_fn, noisy_mat, out_dir = benchmark_inputs(parser, args, denoise_fn, "SIDDBlocks", "noisy_mat",
                                                          "sidd_benchmark")
        blocks = load_sidd_blocks(noisy_mat)
        print(f"{noisy_mat}: {blocks.shape[0]} x {blocks.shape[1]} blocks of {blocks.shape[2]}x{blocks.shape[3]}")
        from tqdm import tqdm

        with tqdm(total=blocks.shape[0] * blocks.shape[1], desc="denoising") as bar:
            denoised, time_mp = denoise_sidd_blocks(blocks, denoise_fn, progress=lambda done, total: bar.update(1))
        info = {"MethodName": args.method_name, "Authors": args.authors, "PaperTitle": args.paper_title,
                "Venue": args.venue}
        paths = write_sidd_submission(denoised, out_dir, time_mp=time_mp, method_info=info)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{time_mp:.3f} s per megapixel")
    print(f"wrote {paths['csv']} (Kaggle: sidd-benchmark-srgb-psnr) and {paths['mat']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
