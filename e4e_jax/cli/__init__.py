"""What every command line of the package shares: one flag style, exit codes, quiet logs.

    parser = cli.make_parser("python -m e4e_jax.sample", "Write a grid of samples.",
                             examples=["python -m e4e_jax.sample --out s.png"])
    parser.add_argument("--batch-size", type=int)        # --batch_size is accepted too
    args = parser.parse_args(argv)

Conventions (docs/cli.md):
  * flags are spelled with dashes; the underscore spelling of every flag is an alias, so
    `--batch_size 4` and `--batch-size 4` parse to the same value (old scripts keep working);
  * `--help` exits 0 and shows the real invocation and an example;
  * exit codes: 0 did what was asked (EXIT_OK), 1 ran but produced nothing usable
    (EXIT_NOTHING), 2 bad arguments or bad input files (EXIT_USAGE), 130 interrupted.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from typing import Sequence

EXIT_OK, EXIT_NOTHING, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DTYPES = ("float32", "bfloat16")
PRECISIONS = ("default", "high", "highest")

# The command line the user typed, when a dispatcher (`e4e-jax SUBCOMMAND`) ran the command:
# usage lines then show it instead of the module's own spelling (`python -m e4e_jax.encode`).
_invocation: str | None = None

_ALIAS_NOTE = ("Flags are spelled with dashes; the underscore spelling (--batch_size) is "
               "accepted as an alias.")


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser that accepts `--a_b` for every `--a-b` (and the reverse), and no
    abbreviations: `--out` is not taken for `--output`, because an abbreviation that happens to
    match today silently means another flag once one is added. An unknown flag is an error that
    names the closest real one.

    The alternate spelling is registered for parsing only, so --help lists each flag once.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        """Declares `--a_b` as `--a-b` (the dashed spelling is the one --help shows)."""
        args = tuple("--" + a[2:].replace("_", "-") if isinstance(a, str) and a.startswith("--")
                     else a for a in args)
        return super().add_argument(*args, **kwargs)

    def _install_aliases(self) -> None:
        for action in list(self._actions):
            for opt in list(action.option_strings):
                if not opt.startswith("--"):
                    continue
                body = opt[2:]
                for alt in ("--" + body.replace("-", "_"), "--" + body.replace("_", "-")):
                    if alt != opt and alt not in self._option_string_actions:
                        self._option_string_actions[alt] = action

    def parse_known_args(self, args=None, namespace=None):
        self._install_aliases()
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        known, extras = self.parse_known_args(args, namespace)
        if extras:
            flags = [a.split("=", 1)[0] for a in extras if a.startswith("--")]
            if flags:
                names = [o for o in self._option_string_actions if o.startswith("--")]
                close = difflib.get_close_matches(flags[0].replace("_", "-"), names, n=1,
                                                  cutoff=0.5)
                hint = f"; did you mean {close[0]}?" if close else "; see --help"
                self.error(f"unknown flag {flags[0]}{hint}")
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return known


def invocation() -> str | None:
    """The spelling set by set_invocation (None: each command's own)."""
    return _invocation


def set_invocation(prog: str | None) -> None:
    """Makes the parsers built from now on show `prog` (e.g. "e4e-jax encode") as their usage
    line, and in their examples in place of the module's own spelling."""
    global _invocation
    _invocation = prog


def make_parser(prog: str, description: str, examples: Sequence[str] = (),
                epilog: str | None = None) -> CliParser:
    """A CliParser whose usage line is `prog` (the command to type) and whose epilog lists
    the examples, then `epilog`, then the alias note. Under `e4e-jax SUBCOMMAND` the usage line
    and the examples show that spelling instead (set_invocation)."""
    import textwrap
    if _invocation and prog:
        examples = [e.replace(prog, _invocation, 1) for e in examples]
        prog = _invocation
    parts = []
    if examples:
        parts.append("examples:\n" + "\n".join("  " + e for e in examples))
    for text in ([epilog] if epilog else []) + [_ALIAS_NOTE]:
        parts.append("\n".join(textwrap.fill(line, 88) for line in text.split("\n")))
    return CliParser(prog=prog, description=description, epilog="\n\n".join(parts),
                     formatter_class=argparse.RawDescriptionHelpFormatter)


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """--verbose: keep third-party log output (TensorFlow, absl, orbax) that is quiet by default."""
    parser.add_argument("--verbose", action="store_true",
                        help="show third-party library logs (TensorFlow, absl), quiet by default")


def quiet_third_party_logs(verbose: bool = False) -> None:
    """Silences the TensorFlow C++ banner (oneDNN), absl and orbax INFO/WARNING logs unless
    `verbose`. Call before importing TensorFlow / MediaPipe (TF reads its level at import)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "2")
    for name in ("absl", "tensorflow", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # gcsfs logs a traceback when its retries run out; e4e_jax.core.fs.RemoteError carries
    # the reason in the command's one error line
    logging.getLogger("gcsfs").setLevel(logging.CRITICAL)
    if "absl.logging" in sys.modules:
        sys.modules["absl.logging"].set_verbosity("error")


def add_dtype_precision(parser: argparse.ArgumentParser) -> None:
    """--dtype and --precision (issue 12): compute dtype and matmul/conv precision of every
    network the command loads; absent flags leave the loaders' defaults."""
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="compute dtype of the networks (default float32; parameters stay "
                             "float32)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="matmul/convolution precision (default: JAX's; 'highest' is "
                             "float32-exact on GPUs/TPUs)")


def loader_kwargs(args) -> dict:
    """{'dtype': ..., 'precision': ...} holding only the flags the user gave."""
    out = {}
    for key in ("dtype", "precision"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    return out


def error(message: str, code: int = EXIT_USAGE) -> int:
    """Prints `error: message` on stderr and returns `code` (for `return cli.error(...)`)."""
    print(f"error: {message}", file=sys.stderr)
    return code
