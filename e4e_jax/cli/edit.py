"""Edit command: inversions and edits of images (or saved latents) as labelled PNG grids.

    python -m e4e_jax.edit --checkpoint runs/demo/export --input photos/ \\
        --edit sefa:0 --edit interfacegan:age.pt --strengths -3 0 3 --output edits/
    python -m e4e_jax.edit --checkpoint converted/e4e_ffhq_encode --latents enc/latents.npy \\
        --edit ganspace:ffhq_pca.pt:54,7,8 --strengths -5 5 --output edits/
    python -m e4e_jax.edit --checkpoint runs/demo/export --synthetic 4 --edit sefa:0 --output e/

--input and --output were --images and --out; the old spellings stay as aliases.

Writes
    OUT/<image>.png          one grid per image: a row per edit, columns source | inversion |
                             the edit at each strength, every cell captioned (with --latents
                             there is no source column, and the title says so)
    OUT/edited_latents.npy   (N, n_edits, n_strengths, n_latent, 512) float32 W+ codes
    OUT/latents.npy, files.txt   the inversions (not with --latents), as `python -m e4e_jax.encode`
    OUT/edits.json           the axes of edited_latents.npy: names, edits, strengths

Edit specs (the same syntax serves eval.py's --edits / --lec_edit; the language is defined in
e4e_jax/editing/spec.py):

    interfacegan:PATH[:STRENGTH] | ganspace:PATH:IDX,START,END[,STRENGTH] |
    sefa:SEMANTIC[:STRENGTH[:LAYERS]]      (LAYERS: all, 2-5 or 2,3,4,5)

A STRENGTH in the spec is its default strength (eval.py uses it; defaults: interfacegan 3, the
official LEC example; ganspace and sefa 5). The command's --strengths give the columns of every
edit; without --strengths the columns are the union over the specs of their own strength (-3,
0, 3 for a spec without one): `--edit sefa:0:10` alone gives one column at +10.

Edited images are decoded like the inversion (stored noise, face_pool, cars crop); cells smaller
than --min_cell pixels (the 16-32 px demo) are magnified by nearest neighbour for display only.

Grid names follow e4e_jax/output_names.py (`a.jpg` -> `a.png`; a second `a.png` -> `a_png.png`;
edits.json lists `names` and `grids` row by row).

The work is done by e4e_jax.apps.edit.run_edits (importable, no argv); this module parses
the arguments, calls it and maps errors to exit codes (0 done; 1 nothing readable, nothing
written; 2 bad arguments or files; 130 interrupted).
"""
from __future__ import annotations

import sys

from e4e_jax import cli
from e4e_jax.apps.edit import NothingEditedError, columns, edit_grid, read_latents, run_edits  # noqa: F401
from e4e_jax.data import image_io
from e4e_jax.editing.prepared import PreparedEdit, prepare_edits  # noqa: F401
from e4e_jax.editing.spec import SPEC_HELP, EditError, EditSpec, EditSpecError, parse_edit_spec  # noqa: F401
from e4e_jax.outputs.grids import display_scale, grid_layout, labelled_grid  # noqa: F401


def build_parser():
    """The argument parser of `python -m e4e_jax.edit`."""
    parser = cli.make_parser(
        "python -m e4e_jax.edit",
        "Invert images (or take saved latents), apply latent edits and write one labelled PNG "
        "grid per image.",
        examples=["python -m e4e_jax.edit --checkpoint runs/demo/export --synthetic 4 "
                  "--edit sefa:0 --output edits/",
                  "python -m e4e_jax.edit --checkpoint converted/e4e_ffhq_encode --input "
                  "photos/ --edit interfacegan:tests/data/editings/interfacegan_directions/age.pt "
                  "--strengths -3 0 3 --output e/"],
        epilog=f"Edit specs: {SPEC_HELP}.\nExit codes: 0 done, 1 no input readable, 2 bad "
               f"arguments or files, 130 interrupted.")
    parser.add_argument("--checkpoint", required=True,
                        help="inverter directory (`e4e-jax convert e4e` output or WORKDIR/export)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", "--images", dest="input", metavar="FOLDER",
                     help="folder of images (searched recursively); --images is an alias")
    src.add_argument("--latents", help="latents.npy as written by `python -m e4e_jax.encode`")
    src.add_argument("--synthetic", type=int, metavar="N",
                     help="N images G(mapping(z)) of the checkpoint's own generator (the demo "
                          "domain; no files needed)")
    parser.add_argument("--generator", metavar="DIR",
                        help="decode with this generator directory instead of the checkpoint's "
                             "(e.g. OUT/generators/<name> of `python -m e4e_jax.invert "
                             "--method pti`; pair it with OUT/latents/<name>.npy); it computes "
                             "under --dtype / --precision like the checkpoint")
    parser.add_argument("--files", help="names for --latents rows (default: files.txt next to it)")
    parser.add_argument("--edit", action="append", required=True, metavar="SPEC",
                        help="an edit spec; repeat for several edits (one grid row each)")
    parser.add_argument("--strengths", type=float, nargs="+",
                        help="strengths of every edit (default: the union of the specs' own "
                             "strengths, -3 0 3 for a spec without one)")
    parser.add_argument("--output", "--out", dest="output", required=True, metavar="OUT",
                        help="output folder; --out is an alias")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the arrays and grids of an earlier run in OUT (default: "
                             "refuse)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-images", type=int, default=None, help="edit at most this many")
    parser.add_argument("--seed", type=int, default=0, help="seed of --synthetic images")
    parser.add_argument("--min-cell", type=int, default=128,
                        help="smaller cells are magnified (nearest) to this size for display")
    cli.add_dtype_precision(parser)
    cli.add_verbose(parser)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    unused = cli.unused_flag(parser.given(argv), [
        ("files", "--files", args.latents is not None, "--latents"),
        ("seed", "--seed", args.synthetic is not None, "--synthetic")])
    if unused:
        return cli.error(unused, cli.EXIT_USAGE)
    from e4e_jax.data.sources import DataError
    cli.quiet_third_party_logs(args.verbose)
    from e4e_jax.nets.model_dir import ModelDirError
    try:
        run_edits(args.checkpoint, args.output, args.edit, images=args.input, latents=args.latents,
                  files=args.files, strengths=args.strengths, batch_size=args.batch_size,
                  num_images=args.num_images, min_cell=args.min_cell,
                  synthetic=args.synthetic, seed=args.seed, loader_kwargs=cli.loader_kwargs(args),
                  generator=args.generator, overwrite=args.overwrite)
    except (ModelDirError, EditError, FileNotFoundError, image_io.ImageReadError,
            DataError) as e:
        return cli.error(str(e), cli.EXIT_USAGE)
    except NothingEditedError as e:
        return cli.error(str(e), cli.EXIT_NOTHING)
    except KeyboardInterrupt:
        return cli.interrupted()       # 130 / 143; run_main prints the one line
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
