"""The synthetic domain: the generator's own images G(mapping(z)), defined once for every user.

The set of `n` images of a key `k` (`synthetic_images`):

    kz, kn = jax.random.split(k)
    z = jax.random.normal(kz, (n, z_dim))      # one draw for the whole set
    w = mapping(z)                             # the ground-truth w; a conditional generator in
                                               # training maps with config.generator_class
    x = synthesis(broadcast(w), noise)         # "const": the generator's stored noise buffers;
                                               # "random": a fresh draw from kn
    x = adaptive_avg_pool2d(x, input_size)     # when the generator's resolution differs

computed in float32 whatever the compute dtype (the data must not change with the policy), at
the model's matmul precision, and NOT clamped: the generator's values outside [-1, 1] are what
the encoder sees (the distortion evaluator's `mse` clamps both sides, `mse_raw` does not).

Who uses which set:

    training batch of step s    k = the step's data key (split from TrainState.rng),
                                n = batch_size, noise = config.data.synthetic_noise
    training validation set     k = key(config.seed + 1000), n = test_batch_size x
                                max_val_batches (4 batches when None), config.data.synthetic_noise
    training held-out set       k = key(config.seed + 2000), n = config.holdout,
                                config.data.synthetic_noise
    eval.py --data synthetic    k = key(--seed), n = --num-images, noise "const"
    edit --synthetic N          k = key(--seed), n = N, noise "const"

so `eval.py --data synthetic --seed 2000 --num-images 32` evaluates the demo's held-out images
(seed 0, holdout 32, stored noise). Image i of a set depends on (k, n, i) only, not on any batch
size. Training's sets are small and generated in one call, like a training batch; eval and edit
generate theirs batch by batch from the set's z (`SyntheticImages`), and XLA may round a batch
differently from the whole set, so the two agree to float32 rounding (about 1e-5), not bit
for bit.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

from e4e_jax.data.loader import Batch, batches_of, pad_batch
from e4e_jax.data.sources import DataError

NOISE_MODES = ("const", "random")


def check_noise(noise: str) -> str:
    """`noise` when it is "const" or "random", else ValueError naming both."""
    if noise not in NOISE_MODES:
        raise ValueError(f"synthetic noise must be one of {NOISE_MODES}, got {noise!r}.")
    return noise


def synthetic_z(generator, key, n: int):
    """(z (n, z_dim) float32, noise key): the first half of the definition (pure jax)."""
    import jax
    kz, kn = jax.random.split(key)
    return jax.random.normal(kz, (n, generator.z_dim)), kn


def render(generator, variables, z, noise: str = "const", noise_key=None,
           size: Sequence[int] | None = None, precision: Any = None):
    """(images (n, H, W, 3) float32, w (n, style_dim)) of the codes z (pure jax).

    generator: a LoadedGenerator or LoadedStyleGAN3 (its module; `variables` are its weights,
    so this runs inside a caller's jit). size: the encoder's input size (H, W); None keeps the generator's
    resolution. precision: the model's matmul precision (also of the pooling)."""
    import jax.numpy as jnp

    from e4e_jax.core.ops import adaptive_avg_pool2d
    gen = generator.with_policy(None, precision)
    w = gen.map(variables, z)
    if w.ndim == 3:  # StyleGAN3's mapping returns W+ (equal rows): its w is one row
        w = w[:, 0]
    w_plus = jnp.broadcast_to(w[:, None], (z.shape[0], gen.n_latent, w.shape[-1]))
    x = gen.synthesize(variables, w_plus, noise, noise_key if noise == "random" else None)
    if size is not None and tuple(x.shape[1:3]) != tuple(size):
        x = adaptive_avg_pool2d(x, tuple(size), precision)
    return x, w


def synthetic_images(generator, variables, key, n: int, noise: str = "const",
                     size: Sequence[int] | None = None, precision: Any = None):
    """The set of `n` images of `key` (module docstring): (images (n, H, W, 3), w (n, S)).
    Pure jax (jit it, or call it inside a jitted step)."""
    z, kn = synthetic_z(generator, key, n)
    return render(generator, variables, z, noise, kn, size, precision)


class SyntheticImages:
    """A fixed set of `num_images` synthetic images of key(seed), in fixed-size padded batches
    named synthetic_00000, ... (the loader's padding rule: zero rows, `valid` real)."""

    def __init__(self, num_images: int, seed: int = 0, noise: str = "const"):
        if num_images < 1:
            raise DataError(f"--num_images must be >= 1 for synthetic data, got {num_images}.")
        self.count = int(num_images)
        self.seed = int(seed)
        self.noise = check_noise(noise)
        self.skipped: list[str] = []
        self.description = (f"synthetic: the generator's own domain, G(mapping(z)) with seed "
                            f"{self.seed}" + ("" if noise == "const" else f", {noise} noise"))
        # id(generator) -> (generator, {what: jitted fn}); the generator is kept so its id is
        # not reused while cached
        self._fns: dict[int, tuple[Any, dict[Any, Callable]]] = {}

    def __len__(self) -> int:
        return self.count

    def names(self, start: int, stop: int) -> list[str]:
        return [f"synthetic_{i:05d}" for i in range(start, stop)]

    def batches(self, inv, batch_size: int) -> Iterator[Batch]:
        """The evaluators' protocol: the set for `inv`'s generator at its input size and
        precision, batch by batch. DataError for a class-conditional generator (z alone does
        not define an image)."""
        g = inv.generator
        if g.c_dim:
            raise DataError("synthetic images (eval's --input synthetic) need an unconditional "
                            f"generator; this one takes class labels (c_dim={g.c_dim}).")
        return self.generate(g, g.variables, inv.input_size, batch_size, inv.precision)

    def _jitted(self, generator, what, make: Callable) -> Callable:
        entry = self._fns.setdefault(id(generator), (generator, {}))
        fns = entry[1]
        if what not in fns:
            fns[what] = make()
        return fns[what]

    def generate(self, generator, variables, size: Sequence[int], batch_size: int,
                 precision: Any = None, in_one_call: bool = False) -> Iterator[Batch]:
        """Batches (batch_size, H, W, 3) of the set for `generator` with `variables`.

        in_one_call: generate the whole set with one program (training's small sets, as a
        training batch is made); otherwise batch by batch from the set's z (one compiled
        program per batch size, the last batch padded). Random noise is drawn for the whole
        set, so such a set is always generated in one call."""
        import jax
        size = tuple(int(s) for s in size)
        key = jax.random.key(self.seed)
        if in_one_call or self.noise == "random":
            fn = self._jitted(generator, ("set", self.count, size, precision), lambda: jax.jit(
                lambda v, k: synthetic_images(generator, v, k, self.count, self.noise, size,
                                              precision)[0]))
            x = np.asarray(fn(variables, key))
            yield from batches_of(x, batch_size, self.names(0, self.count))
            return
        z_fn = self._jitted(generator, ("z", self.count), lambda: jax.jit(
            lambda k: synthetic_z(generator, k, self.count)[0]))
        render_fn = self._jitted(generator, ("render", size, precision), lambda: jax.jit(
            lambda v, z: render(generator, v, z, "const", None, size, precision)[0]))
        z = np.asarray(z_fn(key))
        for start in range(0, self.count, batch_size):
            m = min(batch_size, self.count - start)
            x = np.asarray(render_fn(variables, pad_batch(z[start:start + m], batch_size)))
            yield Batch(pad_batch(x[:m], batch_size), m, self.names(start, start + m))
