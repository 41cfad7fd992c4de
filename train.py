"""Trains an e4e (or pSp) encoder.

usage: python train.py --config CONFIG_FILE[:ARGS] --workdir WORKDIR [--config.FIELD=VALUE ...]
                       [--verbose]

examples:
    python train.py --config configs/demo.py --workdir runs/demo
    python train.py --config configs/ffhq_encode.py --workdir runs/ffhq --config.batch_size=16
    python train.py --config configs/cars_encode.py:A --workdir runs/cars_A    # Table 2 variant
    python train.py --config configs/demo.py --help      # the overrides of that config

The run resumes from WORKDIR/checkpoints when it exists: rerunning the same command after an
interruption (Ctrl-C, SIGTERM from a scheduler) continues exactly where it stopped.
SIGTERM / Ctrl-C finish the current step, save it and exit 143 / 130; a second Ctrl-C aborts.
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


def print_help(argv) -> int:
    """The usage, examples, flags and every --config.FIELD with its default; returns 0."""
    print(__doc__.strip())
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
          f"e4e_jax/config_base.py):")
    for key, value in flat_config(config).items():
        print(f"  --config.{key}={value!r}")
    return 0


class _QuietLibraries(logging.Filter):
    """Drops the chatter of orbax / TensorFlow / jax / etils (INFO, and orbax's "waiting for
    previous save" warnings); keeps clu's metric lines and every error."""

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname.replace(os.sep, "/")
        if "/orbax/" in path:
            return record.levelno >= logging.ERROR
        if record.levelno >= logging.WARNING:
            return True
        return not any(f"/{lib}/" in path for lib in ("orbax", "tensorflow", "jax", "etils"))


def _main(argv):
    from absl import app, flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file(
        "config", None, "experiment config file (configs/*.py)", lock_config=True)
    workdir_flag = flags.DEFINE_string("workdir", None,
                                       "directory for checkpoints, logs and the export")
    flags.DEFINE_bool("verbose", False, "show the libraries' own logs")

    def main(args):
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments: {args[1:]}", exitcode=2)
        if config_flag.value is None or workdir_flag.value is None:
            raise app.UsageError("--config and --workdir are required (see --help).", exitcode=2)
        if not flags.FLAGS.verbose:
            for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
                handler.addFilter(_QuietLibraries())
        from e4e_jax.train import Interrupted, TrainingError, train_and_evaluate
        try:
            train_and_evaluate(config_flag.value, workdir_flag.value)
        except TrainingError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(1)
        except Interrupted as e:
            sys.stdout.flush()
            print(str(e), file=sys.stderr, flush=True)
            sys.exit(e.exit_code)

    def parse(args):
        try:
            return flags.FLAGS(args)
        except flags.Error as e:
            print(f"error: {e}\nsee: python train.py --help", file=sys.stderr)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            # ml_collections raises these for an unknown field or a value of the wrong type
            print(f"error: invalid --config override or config file: {e}\nsee: python "
                  f"train.py --config FILE --help (it lists every --config.FIELD)",
                  file=sys.stderr)
        sys.exit(2)

    app.run(main, argv=argv, flags_parser=parse)


def run(argv) -> None:
    if any(a in HELP_FLAGS for a in argv[1:]):
        sys.exit(print_help(argv[1:]))
    spec = _config_spec(argv[1:])
    if spec is not None and not os.path.isfile(spec.partition(":")[0]):
        print(f"error: --config {spec}: no such config file (the configs are in configs/*.py; "
              f"see python train.py --help)", file=sys.stderr)
        sys.exit(2)
    verbose = any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in argv[1:])
    if not verbose:
        # before TensorFlow is imported: its C++ banners (oneDNN, CUDA probing) go
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        _main(argv)
    except KeyboardInterrupt:
        # a second Ctrl-C (or SIGTERM) while the first one was being handled: no save
        print("\naborted: the step in progress was not saved; rerunning the same command "
              "resumes from the latest complete checkpoint in WORKDIR/checkpoints.",
              file=sys.stderr, flush=True)
        os._exit(130)   # orbax's background threads must not keep the process alive


if __name__ == "__main__":
    run(sys.argv)
