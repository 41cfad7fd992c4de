"""Runs a tiny training in its own process (device count / multi-process tests) and saves the
exported parameters and the final losses to an npz file."""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--coordinator")
    p.add_argument("--num_processes", type=int)
    p.add_argument("--process_id", type=int)
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args()

    import numpy as np
    from tests.support.train_utils import tiny_config
    from e4e_jax import train as trainer
    from e4e_jax.nets.model_dir import flatten_tree, load_model_dir

    config = tiny_config(max_steps=args.steps)
    config.batch_size = 8
    config.test_batch_size = 8
    config.data.kind = "images"
    config.data.train = args.images
    config.data.test = args.images
    config.data.flip_prob = 0.5
    # SGD keeps parameters comparable across device counts (see e4e_jax.core.optim.OPTIMIZERS)
    config.optimizer.name = "sgd"
    config.optimizer.lr = 0.05
    if args.coordinator:
        config.distributed.initialize = True
        config.distributed.coordinator_address = args.coordinator
        config.distributed.num_processes = args.num_processes
        config.distributed.process_id = args.process_id
    summary = trainer.train_and_evaluate(config, args.workdir)
    if args.process_id in (None, 0):
        out = {f"param/{k}": v for k, v in
               flatten_tree(load_model_dir(os.path.join(args.workdir, "export"),
                                           "e4e_inverter").variables).items()}
        for k, v in summary["last_train_metrics"].items():
            if not k.startswith(("step_time", "images_per")):
                out[f"train/{k}"] = np.asarray(v)
        out["mse_after"] = np.asarray(summary["mse_after"])
        np.savez(args.out, **out)


if __name__ == "__main__":
    main()
