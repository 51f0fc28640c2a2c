"""Denoise a benchmark without public ground truth and write its submission: SIDD sRGB or DND sRGB.

    python scripts/submission.py --format sidd -opt options/test/X.yml \
        --noisy_mat datasets/SIDD/BenchmarkNoisyBlocksSrgb.mat [--out results/X/sidd_benchmark]
    python scripts/submission.py --format dnd -opt options/test/X.yml --root datasets/DND [--out results/X/dnd]

The denoiser is the trained model named by the option file (``path.pretrain_network``), with its
test-time settings (``method``, ``test.tile``). Without ``--noisy_mat`` (``--root``) the ``noisy_mat``
(``root``) of the first ``SIDDBlocks`` (``DND``) entry under ``datasets`` is used. The output folder
``--out`` defaults to ``<results_root>/<name>/sidd_benchmark`` (``.../dnd``).

SIDD (``--format sidd``, input ``BenchmarkNoisyBlocksSrgb.mat``):

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

DND (``--format dnd``, input the DND download as is: ``info.mat`` and ``images_srgb/0001.mat`` ...
``0050.mat``), following the DND submission kit (``dnd_denoise.py`` / ``bundle_submissions.py`` by
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
from amcfd.data import submission as writers  # noqa: E402
from amcfd.data.dnd import DND  # noqa: E402
from amcfd.data.sidd import load_sidd_blocks  # noqa: E402
from amcfd.registry import ConfigError  # noqa: E402

# format: (dataset type of the option file's entry, its input key and option, default output folder name)
FORMATS = {"sidd": ("SIDDBlocks", "noisy_mat", "sidd_benchmark"), "dnd": ("DND", "root", "dnd")}


def sidd(args, denoise_fn, noisy_mat, out_dir) -> str:
    from tqdm import tqdm

    blocks = load_sidd_blocks(noisy_mat)
    print(f"{noisy_mat}: {blocks.shape[0]} x {blocks.shape[1]} blocks of {blocks.shape[2]}x{blocks.shape[3]}")
    with tqdm(total=blocks.shape[0] * blocks.shape[1], desc="denoising") as bar:
        denoised, time_mp = writers.denoise_sidd_blocks(blocks, denoise_fn,
                                                        progress=lambda done, total: bar.update(1))
    info = {"MethodName": args.method_name, "Authors": args.authors, "PaperTitle": args.paper_title,
            "Venue": args.venue}
    paths = writers.write_sidd_submission(denoised, out_dir, time_mp=time_mp, method_info=info)
    return (f"{time_mp:.3f} s per megapixel\n"
            f"wrote {paths['csv']} (Kaggle: sidd-benchmark-srgb-psnr) and {paths['mat']}")


def dnd(args, denoise_fn, root, out_dir) -> str:
    from tqdm import tqdm

    dataset = DND(root)
    with tqdm(total=len(dataset), desc="denoising DND boxes") as bar:
        writers.denoise_dnd(root, out_dir, denoise_fn, overwrite=args.overwrite,
                            progress=lambda done, total: bar.update(done - bar.n))
    bundled = writers.bundle_dnd_submission(out_dir, num_images=len(dataset.boxes),
                                            boxes_per_image=len(dataset.boxes[0]))
    return f"wrote {bundled}: upload its .mat files to the DND website"


def main(argv=None, denoise_fn=None) -> int:
    """CLI; tests pass ``denoise_fn`` (then the input and ``--out`` replace the option file)."""
    parser = benchmark_parser(__doc__.split("\n")[0], "noisy_mat", "sidd: BenchmarkNoisyBlocksSrgb.mat")
    parser.add_argument("--format", required=True, choices=list(FORMATS), help="which benchmark")
    parser.add_argument("--root", help="dnd: the DND folder (info.mat, images_srgb/)")
    for field in ("method_name", "authors", "paper_title", "venue"):
        parser.add_argument(f"--{field}", default="", help=f"sidd: OptionalData.{field} in SubmitSrgb.mat")
    parser.add_argument("--overwrite", action="store_true", help="dnd: denoise boxes whose file already exists")
    args = parser.parse_args(argv)
    dataset_type, input_key, out_name = FORMATS[args.format]
    for name, (_, key, _) in FORMATS.items():
        if name != args.format and getattr(args, key):
            parser.error(f"--{key} is the input of --format {name}, not {args.format}")
    try:
        denoise_fn, source, out_dir = benchmark_inputs(parser, args, denoise_fn, dataset_type, input_key, out_name)
        print((sidd if args.format == "sidd" else dnd)(args, denoise_fn, source, out_dir))
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
