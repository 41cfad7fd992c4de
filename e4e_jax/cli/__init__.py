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
    (EXIT_NOTHING), 2 bad arguments or bad input files (EXIT_USAGE), 130 / 143 interrupted by
    SIGINT / SIGTERM (EXIT_INTERRUPTED / EXIT_TERMINATED).

Interrupts (run_main, used by `e4e-jax` and every `python -m e4e_jax.X`): a subcommand whose
main catches KeyboardInterrupt returns `interrupted(line)` (its own one-line account of what it
kept) or `interrupted()` (run_main then prints a generic line); run_main exits 130 / 143 with
exactly one such line, no traceback.
"""
from __future__ import annotations

import _thread
import argparse
import difflib
import importlib
import logging
import os
import signal
import sys
import threading
import time
from typing import NoReturn, Sequence

EXIT_OK, EXIT_NOTHING, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 143                  # 128 + SIGTERM, as a shell reports a killed command

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

    def add_confusion(self, flag: str, hint: str) -> None:
        """Declares a flag users bring from another command (`sample --checkpoint`): giving it
        is refused with `hint` (what this command takes instead) rather than a closest-name
        guess."""
        self.__dict__.setdefault("_confusions", {})[flag] = hint

    def _unknown_flag(self, flag: str) -> NoReturn:
        confusions = self.__dict__.get("_confusions", {})
        hint = confusions.get(flag) or confusions.get(flag.replace("_", "-"))
        if hint:
            self.error(f"unknown flag {flag}: {hint}")
        names = [o for o in self._option_string_actions if o.startswith("--")]
        close = difflib.get_close_matches(flag.replace("_", "-"), names, n=1, cutoff=0.5)
        self.error(f"unknown flag {flag}" + (f"; did you mean {close[0]}?" if close
                                               else "; see --help"))

    def parse_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        # an unknown flag first: argparse would otherwise report a missing required flag
        # (often the one the user misspelt: `--outptu X` -> "required: --output")
        self._install_aliases()
        for a in args:
            if a == "--":
                break
            flag = a.split("=", 1)[0]
            if flag.startswith("--") and len(flag) > 2 and flag not in self._option_string_actions:
                self._unknown_flag(flag)
        known, extras = self.parse_known_args(args, namespace)
        if extras:
            flags = [a.split("=", 1)[0] for a in extras if a.startswith("--")]
            if flags:
                self._unknown_flag(flags[0])
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return known

    def given(self, args=None) -> set[str]:
        """The dests of the flags that appear on the command line `args` (already accepted by
        parse_args), so a command can refuse a flag that its other flags make ineffective even
        when the value typed equals the default."""
        # argparse fills a dest with its default only when the namespace lacks it, and the
        # accumulating actions (append, extend, count) start from None: a dest still None
        # afterwards was not on the command line (no typed value parses to None)
        start = argparse.Namespace(**{a.dest: None for a in self._actions
                                      if a.dest is not argparse.SUPPRESS})
        known, _ = self.parse_known_args(list(sys.argv[1:] if args is None else args), start)
        return {k for k, v in vars(known).items() if v is not None}


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
    # a subcommand builds its parser once per run: a new run has reported no interrupt yet
    # (matters when mains are called one after another in one process, as the tests do)
    _interrupt["reported"] = False
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


def unused_flag(given: set[str], rules) -> str | None:
    """The one-line refusal of the first flag the user gave (`given`: CliParser.given) that
    the other flags make ineffective, or None. rules: (dest, flag, in_effect, what it applies
    to), e.g. ("files", "--files", args.latents is not None, "--latents")."""
    for dest, flag, in_effect, applies_to in rules:
        if dest in given and not in_effect:
            return (f"{flag} applies to {applies_to} only, so here it would have no effect: "
                    f"drop {flag} or add what it applies to.")
    return None


def error(message: str, code: int = EXIT_USAGE) -> int:
    """Prints `error: message` on stderr and returns `code` (for `return cli.error(...)`)."""
    print(f"error: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------- interrupts

# The first SIGINT / SIGTERM run_main's handler received (0: none) and whether the command has
# printed its own interrupt line (then run_main prints none).
_interrupt = {"signum": 0, "reported": False, "again": False, "in_hook": False,
              "retrying": False, "starting": ""}


def _on_signal(signum, frame):
    # Python runs this in the main thread only, between bytecodes: raising here unwinds the
    # command like Ctrl-C does by default, but SIGTERM too, and only once: a second signal
    # while the command writes what it keeps is ignored and must not cut the writes short
    # (the first one already decided the exit code).
    if _interrupt["signum"] and (not _interrupt["again"] or _interrupt["in_hook"]):
        return
    _interrupt["signum"] = _interrupt["signum"] or int(signum)
    if _interrupt["starting"]:
        # still importing the subcommand (TensorFlow alone takes seconds): nothing is
        # written yet, so leave at once rather than unwind the imports (see _importing).
        # os.write, not print: the main thread may be inside a print to stderr
        _interrupt["reported"] = True
        os.write(2, f"{_signal_name(interrupt_exit_code())}: {_interrupt['starting']} "
                    f"interrupted while starting; nothing written\n".encode())
        _exit_now(interrupt_exit_code())
    if _importing(frame):
        # never raise inside an import: the half-initialized modules an unwinding import
        # drops (jaxlib's, TensorFlow's C++ extensions) can segfault when freed (exit 139
        # with nothing printed); ask again every 20 ms until the import is done
        _retry()
        return
    _interrupt["again"] = False
    raise KeyboardInterrupt


def _importing(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def _retry() -> None:
    _interrupt["again"] = True
    if not _interrupt["retrying"]:
        _interrupt["retrying"] = True
        threading.Thread(target=_interrupt_again, daemon=True).start()


def _on_unraisable(unraisable) -> None:
    # The handler runs wherever the main thread happens to be, which can be a gc callback
    # (jax's _xla_gc_callback) or a __del__: Python swallows the KeyboardInterrupt there,
    # prints "Exception ignored in ..." with a traceback, and the command carries on as if
    # never interrupted. Say nothing and deliver the interrupt again from another thread
    # until it is raised outside this hook (here it would be swallowed again; if it lands in
    # another callback, this hook asks again).
    if issubclass(unraisable.exc_type, KeyboardInterrupt) and _interrupt["signum"]:
        _interrupt["in_hook"] = True
        try:
            _retry()
        finally:
            _interrupt["in_hook"] = False
        return
    # a command's own handler raised it (invert's AbortSignals): it can raise once more
    owner = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
    if issubclass(unraisable.exc_type, KeyboardInterrupt) and hasattr(owner, "redeliver"):
        signum = owner.redeliver()
        if signum:
            _interrupt["in_hook"] = True
            threading.Thread(target=_deliver_after_hook, args=(signum,), daemon=True).start()
            _interrupt["in_hook"] = False
        return
    sys.__unraisablehook__(unraisable)


def _deliver_after_hook(signum: int) -> None:
    while _interrupt["in_hook"]:
        time.sleep(0.005)
    time.sleep(0.02)                   # past the swallowing callback (it asks again if not)
    _thread.interrupt_main(signum)


def _interrupt_again() -> None:
    while True:
        time.sleep(0.02)
        if not _interrupt["again"]:    # cleared by _on_signal when it raises
            _interrupt["retrying"] = False
            if not _interrupt["again"]:
                return
        _thread.interrupt_main(_interrupt["signum"])


def interrupt_exit_code() -> int:
    """143 after SIGTERM, 130 after SIGINT or a KeyboardInterrupt without a signal."""
    return EXIT_TERMINATED if _interrupt["signum"] == signal.SIGTERM else EXIT_INTERRUPTED


def interrupted(line: str | None = None, code: int | None = None,
                printed: bool = False) -> int:
    """What a subcommand's main returns when it was interrupted (KeyboardInterrupt caught):
    prints `line`, the command's one-line account of what it kept, on stderr (at most one such
    line per run); `printed=True` says the library already printed it. Without either,
    run_main prints a generic line. Returns `code`, or 130 / 143 after SIGINT / SIGTERM."""
    if line and not _interrupt["reported"]:
        print(line, file=sys.stderr, flush=True)
    if line or printed:
        _interrupt["reported"] = True
    return interrupt_exit_code() if code is None else code


def _signal_name(code: int) -> str:
    return "SIGTERM" if code == EXIT_TERMINATED else "SIGINT"


def run_main(module: str, argv: Sequence[str] | None = None, prog: str | None = None,
             label: str | None = None) -> int:
    """Imports `module` and returns its `main(argv)`, with SIGINT and SIGTERM turned into
    KeyboardInterrupt from the first import on; `prog` (e.g. "e4e-jax encode") is the spelling
    of the usage lines (set_invocation), `label` (default `prog`) names the command in the
    generic interrupt line. An interrupted command (KeyboardInterrupt, or main
    returning 130 / 143) never returns: run_main prints one line unless the command printed
    its own (`interrupted`), flushes stdout / stderr and ends the process with os._exit(130 /
    143), never a traceback. A signal while `module` is still being imported ends the process
    at once ("interrupted while starting; nothing written"); one during a later import is
    raised when that import is done; one that a gc callback or __del__ swallows is raised
    again. Handlers are installed from the main thread only and restored when main returns
    normally (in-process callers such as tests keep theirs)."""
    previous, previous_hook = {}, sys.unraisablehook
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, _on_signal)
        sys.unraisablehook = _on_unraisable
    _interrupt.update(signum=0, reported=False, again=False, in_hook=False,
                      starting=label or prog or module)
    if prog:
        set_invocation(prog)
    try:
        main = importlib.import_module(module).main
        _interrupt["starting"] = ""
        code = main(argv)
    except KeyboardInterrupt:          # during an import, a compile, or a main without a catch
        code = interrupted()
    finally:
        _interrupt["starting"] = ""
        if prog:
            set_invocation(None)
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED) or _interrupt["signum"]:
        if code not in (EXIT_INTERRUPTED, EXIT_TERMINATED):
            code = interrupt_exit_code()   # a signal the command swallowed still counts
        if not _interrupt["reported"]:
            name = label or prog or module
            print(f"{_signal_name(code)}: {name} interrupted before it finished; what it was "
                  f"writing is incomplete (files completed earlier are kept): rerun the same "
                  f"command", file=sys.stderr, flush=True)
        _exit_now(code)
    for s, handler in previous.items():
        signal.signal(s, handler)
    sys.unraisablehook = previous_hook
    return code


def _exit_now(code: int) -> NoReturn:
    """Ends the process without the interpreter's teardown. Why: a KeyboardInterrupt can land
    while XLA compiles or runs on its own threads (and TensorFlow's tf.data / gcsfs threads may
    be live); finalizing the interpreter under them, or destroying their C++ objects from
    atexit hooks, crashes with a segfault (exit 139) after the interrupt line was printed.
    The commands close and flush their own output files before returning (the `finally`
    blocks that write summaries and manifests), so only Python's std streams are left
    buffered: flush them here, then skip the rest."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, RuntimeError):  # closed pipe / reentrant: say no more
            pass
    os._exit(code)
