"""Denoise the DND sRGB benchmark boxes and bundle them for upload.

    python scripts/dnd_submission.py -opt options/test/X.yml --root datasets/DND [--out results/X/dnd]

The denoiser is the trained model named by the option file (``path.pretrain_network``), with its
test-time settings (``method``, ``test.tile``). Without ``--root`` the ``root`` of the first ``DND``
entry under ``datasets`` is used. ``--root`` is the DND download as is: ``info.mat`` and
``images_srgb/0001.mat`` ... ``0050.mat``.

Output, following the DND submission kit (``dnd_denoise.py`` / ``bundle_submissions.py`` by
T. Plötz, distributed with the dataset at noise.visinf.tu-darmstadt.de and copied in many public
repositories):

- ``<out>/NNNN_KK.mat``: ``Idenoised_crop``, the denoised box (float32, H x W x 3, values in [0, 1]),
  for image NNNN (1..50) and box KK (1..20). Existing files are kept, so a stopped run resumes
  (``--overwrite`` redoes them).
- ``<out>/bundled/NNNN.mat``: ``Idenoised`` (1 x 20 cell of the crops), ``israw`` (false) and
  ``eval_version`` ("1.0"). Upload the 50 files of ``bundled/`` to the DND website.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amcfd.cli import benchmark_inputs, benchmark_parser  # noqa: E402
from amcfd.data.dnd import DND  # noqa: E402
from amcfd.data.submission import bundle_dnd_submission, denoise_dnd  # noqa: E402
from amcfd.registry import ConfigError  # noqa: E402


def main(argv=None, denoise_fn=None) -> int:
    """CLI; tests pass ``denoise_fn`` (then ``--root`` and ``--out`` replace the option file)."""
    parser = benchmark_parser(__doc__.split("\n")[0], "root", "DND folder (info.mat, images_srgb/)")
    parser.add_argument("--overwrite", action="store_true", help="denoise boxes whose file already exists")
    args = parser.parse_args(argv)
    try:
        denoise_fn, root, out_dir = benchmark_inputs(parser, args, denoise_fn, "DND", "root", "dnd")
        dataset = DND(root)
        from tqdm import tqdm

        with tqdm(total=len(dataset), desc="denoising DND boxes") as bar:
            denoise_dnd(root, out_dir, denoise_fn, overwrite=args.overwrite,
                        progress=lambda done, total: bar.update(done - bar.n))
        bundled = bundle_dnd_submission(out_dir, num_images=len(dataset.boxes),
                                        boxes_per_image=len(dataset.boxes[0]))
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {bundled}: upload its .mat files to the DND website")
    return 0


if __name__ == "__main__":
    sys.exit(main())
