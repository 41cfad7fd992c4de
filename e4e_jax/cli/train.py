"""`e4e-jax train` (also `python train.py`): trains an e4e (or pSp) encoder.

usage: {prog} --config CONFIG_FILE[:ARGS] --workdir WORKDIR [--config.FIELD=VALUE ...]
       [--verbose]

examples:
    {prog} --config configs/demo.py --workdir runs/demo
    {prog} --config configs/ffhq_encode.py --workdir runs/ffhq --config.batch_size=16
    {prog} --config configs/cars_encode.py:A --workdir runs/cars_A    # Table 2 variant
    {prog} --config configs/demo.py --help      # the overrides of that config

The run resumes from WORKDIR/checkpoints when it exists: rerunning the same command after an
interruption (Ctrl-C, SIGTERM from a scheduler) continues exactly where it stopped.
SIGTERM / Ctrl-C finish the current step, save it and exit 143 / 130; a second Ctrl-C aborts.
Overrides take dashes or underscores (--config.batch-size=4 is --config.batch_size=4); a field
the config does not have is refused naming the closest one.
--verbose shows the libraries' own logs (TensorFlow, orbax, absl INFO), hidden by default.
Exit status: 0 trained (or already finished), 1 training failed, 2 bad arguments,
130 / 143 interrupted after saving.
"""
import logging
import os
import sys

HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull")


def _config_spec(argv, default=None):
    """The FILE[:ARGS] of --config in argv (`default` when absent)."""
    spec = default
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            spec = a.split("=", 1)[1]
        elif a == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
    return spec


def _config_for_help(argv):
    """The config named by --config in argv (configs/demo.py when none), for --help."""
    spec = _config_spec(argv, "configs/demo.py")
    path, _, arg = spec.partition(":")
    import importlib.util
    module_spec = importlib.util.spec_from_file_location("_help_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return spec, module.get_config(arg or None)


def _prog(argv0: str) -> str:
    """How the user ran the command: `e4e-jax train` or `python train.py`."""
    return argv0 if argv0.startswith("e4e-jax") else "python train.py"


def print_help(argv, prog: str = "python train.py") -> int:
    """The usage, examples, flags and every --config.FIELD with its default; returns 0."""
    print(__doc__.strip().format(prog=prog))
    print("\nflags:\n  --config FILE[:ARGS]   experiment config (configs/*.py; ARGS: a Table 2 "
          "variant A-D and/or runlocal)\n  --workdir DIR          checkpoints, logs, "
          "summary.json and export/\n  --verbose              show the libraries' logs\n")
    try:
        spec, config = _config_for_help(argv)
    except Exception as e:                                  # noqa: BLE001 -- help must not fail
        print(f"(cannot load the config to list its fields: {e})")
        return 0
    from e4e_jax.train.loop import flat_config
    print(f"--config.FIELD=VALUE overrides (defaults of {spec}; field meanings: "
          f"e4e_jax/train/config.py):")
    for key, value in flat_config(config).items():
        print(f"  --config.{key}={value!r}")
    return 0


class _QuietLibraries(logging.Filter):
    """Drops the chatter of orbax / TensorFlow / jax / etils / clu (INFO, and orbax's "waiting
    for previous save" warnings); keeps every warning of the others and every error. (The
    metrics go to TensorBoard and WORKDIR/metrics.jsonl; the loop prints one line per logging
    interval.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname.replace(os.sep, "/")
        if "/orbax/" in path:
            return record.levelno >= logging.ERROR
        if record.levelno >= logging.WARNING:
            return True
        return not any(f"/{lib}/" in path
                       for lib in ("orbax", "tensorflow", "tensorflow_datasets", "jax",
                                   "etils", "clu"))


def _main(argv, prog: str = "python train.py"):
    from absl import app, flags
    from ml_collections import config_flags

    # sys_argv: ml_collections reads the overrides from sys.argv unless told; argv is the
    # rewritten command line (--config.batch-size -> --config.batch_size)
    config_flag = config_flags.DEFINE_config_file(
        "config", None, "experiment config file (configs/*.py)", lock_config=True,
        sys_argv=list(argv))
    workdir_flag = flags.DEFINE_string("workdir", None,
                                       "directory for checkpoints, logs and the export")
    flags.DEFINE_bool("verbose", False, "show the libraries' own logs")

    def main(args):
        # one line each, as every other subcommand (absl's UsageError prints its usage block)
        if len(args) > 1:
            print(f"error: unexpected arguments {' '.join(args[1:])}: training takes only "
                  f"flags (see {prog} --help)", file=sys.stderr)
            sys.exit(2)
        missing = [f"--{f.name}" for f in (config_flag, workdir_flag) if f.value is None]
        if missing:
            print(f"error: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                  f"required, e.g. {prog} --config configs/demo.py --workdir runs/demo "
                  f"(see {prog} --help)", file=sys.stderr)
            sys.exit(2)
        if not flags.FLAGS.verbose:
            for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
                handler.addFilter(_QuietLibraries())
        from e4e_jax.train import Interrupted, TrainingError, train_and_evaluate
        from e4e_jax.core.fs import RemoteError
        from e4e_jax.data.sources import DataError
        explicit_generator(config_flag.value, argv)
        try:
            train_and_evaluate(config_flag.value, workdir_flag.value,
                               verbose=flags.FLAGS.verbose)
        except TrainingError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(e.exit_code)            # 2 for settings found wrong up front
        except (DataError, RemoteError) as e:   # a missing / empty data folder, a bucket
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        except Interrupted as e:
            sys.stdout.flush()
            print(str(e), file=sys.stderr, flush=True)
            sys.exit(e.exit_code)

    def parse(args):
        try:
            return flags.FLAGS(args)
        except flags.UnrecognizedFlagError as e:
            print(unknown_flag_line(e.flagname, e.flagvalue, args, prog), file=sys.stderr)
        except flags.Error as e:
            print(f"error: {e} (see {prog} --help)", file=sys.stderr)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            # ml_collections raises these for a value of the wrong type (KeyError's str() is
            # the repr of a multi-line message: keep its first line, unquoted)
            first = str(e.args[0] if e.args else e).strip().splitlines()[0]
            print(f"error: invalid --config override or config file: {first} ({prog} "
                  f"--config FILE --help lists every --config.FIELD)", file=sys.stderr)
        sys.exit(2)

    app.run(main, argv=argv, flags_parser=parse)


def unknown_flag_line(name: str, token: str, argv, prog: str) -> str:
    """The error line for a flag train does not have: a config field given as a plain flag
    (`--batch-size=4`) is pointed to its `--config.batch_size=4` spelling; another name gets
    the closest of train's own flags or the config's fields."""
    value = token.partition("=")[2] if "=" in token else None
    if value is None and token in argv:
        following = argv[argv.index(token) + 1:argv.index(token) + 2]
        value = following[0] if following and not following[0].startswith("-") else None
    key = name.replace("-", "_")
    try:
        _, config = _config_for_help(argv)
        from e4e_jax.train.loop import flat_config
        fields = list(flat_config(config))
    except Exception:                         # noqa: BLE001 -- the line is still useful
        fields = []
    matches = [f for f in fields if f == key or f.endswith("." + key)]
    if matches:
        return (f"error: unknown flag --{name}; training settings are config fields: "
                f"--config.{matches[0]}={value if value is not None else 'VALUE'} "
                f"(see {prog} --help)")
    import difflib
    own = ["config", "workdir", "verbose"]
    close = difflib.get_close_matches(key, own + fields, n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = (f"; did you mean --{close[0]}?" if close[0] in own
                else f"; did you mean --config.{close[0]}?")
    return f"error: unknown flag --{name}{hint} (see {prog} --help)"


def _overridden(argv, field: str) -> bool:
    """Whether argv sets --config.FIELD (or a field under it)."""
    return any(a == f"--config.{field}" or a.startswith((f"--config.{field}=",
                                                           f"--config.{field}."))
               for a in argv)


def explicit_generator(config, argv) -> None:
    """An explicit --config.generator.path switches a config with a seeded random generator
    (the demo's generator.init.resolution) to that directory, saying so in one line; giving
    --config.generator.init.* too leaves both, and the start-up checks refuse the pair."""
    if (_overridden(argv, "generator.path") and not _overridden(argv, "generator.init")
            and config.generator.path and int(config.generator.init.resolution or 0)):
        print(f"training over --config.generator.path={config.generator.path} instead of the "
              f"config's seeded random generator (generator.init.resolution="
              f"{int(config.generator.init.resolution)} -> 0)", flush=True)
        config.generator.init.resolution = 0


def normalize_overrides(argv: list[str]) -> list[str]:
    """`--config.batch-size=4` -> `--config.batch_size=4`: config fields are Python names, and
    every other flag of the package is spelled with dashes."""
    out = []
    for a in argv:
        if a.startswith("--config."):
            key, eq, value = a[len("--config."):].partition("=")
            a = "--config." + key.replace("-", "_") + eq + value
        out.append(a)
    return out


def check_overrides(argv: list[str], prog: str) -> str | None:
    """An error line for the first --config.FIELD the config does not have (naming the closest
    field), or None. Loads the config module named by --config, as --help does."""
    keys = [a[len("--config."):].partition("=")[0] for a in argv if a.startswith("--config.")]
    if not keys:
        return None
    try:
        spec, config = _config_for_help(argv)
    except Exception:                         # noqa: BLE001 -- absl reports a bad config itself
        return None
    from e4e_jax.train.loop import flat_config
    fields = list(flat_config(config))
    prefixes = {f.rsplit(".", i)[0] for f in fields for i in range(f.count(".") + 1)}
    for key in keys:
        if key not in prefixes:
            import difflib
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
            hint = f"; did you mean --config.{close[0]}?" if close else ""
            return (f"error: --config.{key}: {spec} has no field {key!r}{hint} "
                    f"({prog} --config {spec} --help lists them)")
    return None


def quiet_native_logs(environ) -> None:
    """The C++ logs' levels, set in `environ` before TensorFlow is imported (it reads them
    once, at import; worker processes inherit them): TensorFlow's oneDNN / CPU-feature / CUDA
    banners and glog users go; a level the user exported stays."""
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    environ.setdefault("GLOG_minloglevel", "2")


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with the process's stderr on /dev/null. TensorFlow 2.20 and newer
    log their oneDNN notice through absl before absl is initialised, twice, at import, and no
    level setting silences that; the import is the only place they print, so only the import is
    muted. A failed import is left for the code that needs TensorFlow to report."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            except ImportError:
                pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def run(argv) -> None:
    prog = _prog(argv[0])
    argv = [argv[0]] + normalize_overrides(list(argv[1:]))
    if any(a in HELP_FLAGS for a in argv[1:]):
        sys.exit(print_help(argv[1:], prog))
    spec = _config_spec(argv[1:])
    if spec is not None and not os.path.isfile(spec.partition(":")[0]):
        print(f"error: --config {spec}: no such config file (the configs are in configs/*.py; "
              f"see {prog} --help)", file=sys.stderr)
        sys.exit(2)
    problem = check_overrides(argv[1:], prog)
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)
    verbose = any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in argv[1:])
    if not verbose:
        quiet_native_logs(os.environ)
        import_tensorflow_quietly()
    try:
        _main(argv, prog)
    except KeyboardInterrupt:
        # a second Ctrl-C (or SIGTERM) while the first one was being handled: no save
        print("\naborted: the step in progress was not saved; rerunning the same command "
              "resumes from the latest complete checkpoint in WORKDIR/checkpoints.",
              file=sys.stderr, flush=True)
        os._exit(130)   # orbax's background threads must not keep the process alive


def main(argv=None) -> int:
    """`e4e-jax train ARGS`: runs the command, returns its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(["e4e-jax train"] + argv)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 1
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    run(sys.argv)
