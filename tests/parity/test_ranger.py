"""Ranger (official training/ranger.py) and the Adam option against the official numbers."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.support.fixtures import FIXTURES, assert_close
from e4e_jax.core.optim import centralize_gradients, lookahead, make_optimizer, ranger

NAMES = ("conv.weight", "linear.weight", "linear.bias")
STEPS = 20


def to_flax(name, x):
    """PyTorch layouts of the fixture -> Flax layouts (conv HWIO, Dense (in, out))."""
    x = np.asarray(x, np.float32)
    if x.ndim == 4:
        return np.transpose(x, (2, 3, 1, 0))
    if x.ndim == 2:
        return x.T
    return x


def from_flax(x):
    x = np.asarray(x)
    if x.ndim == 4:
        return np.transpose(x, (3, 2, 0, 1))
    if x.ndim == 2:
        return x.T
    return x


@pytest.fixture(scope="module")
def fixture():
    folder = os.path.join(FIXTURES, "ranger_optimizer")
    inputs = dict(np.load(os.path.join(folder, "inputs.npz")))
    expected = dict(np.load(os.path.join(folder, "expected.npz")))
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    return inputs, expected, meta


def run_steps(opt, inputs, jit=True):
    # A nested Flax-like pytree, so the optimizer is exercised on the structures training uses.
    params = {"conv": {"kernel": to_flax("conv", inputs["init/conv.weight"])},
              "linear": {"kernel": to_flax("linear", inputs["init/linear.weight"]),
                         "bias": inputs["init/linear.bias"]}}
    params = jax.tree.map(jnp.asarray, params)
    state = opt.init(params)

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    if jit:
        step = jax.jit(step)
    history = []
    for t in range(STEPS):
        grads = {"conv": {"kernel": to_flax("c", inputs[f"grad/conv.weight/{t}"])},
                 "linear": {"kernel": to_flax("l", inputs[f"grad/linear.weight/{t}"]),
                            "bias": jnp.asarray(inputs[f"grad/linear.bias/{t}"])}}
        params, state = step(params, state, grads)
        history.append({"conv.weight": from_flax(params["conv"]["kernel"]),
                        "linear.weight": from_flax(params["linear"]["kernel"]),
                        "linear.bias": np.asarray(params["linear"]["bias"])})
    return history


def test_ranger_matches_official_every_step(fixture):
    inputs, expected, meta = fixture
    lr = meta.get("lr", 1e-2) if isinstance(meta, dict) else 1e-2
    history = run_steps(ranger(lr), inputs)
    for name in NAMES:
        got = np.stack([h[name] for h in history])
        assert_close(f"ranger {name} (20 steps)", got, expected[f"params/{name}"], atol=1e-6)


def test_ranger_defaults_are_official():
    # Same trajectory from the explicit official defaults and from ranger(lr) alone.
    inputs = dict(np.load(os.path.join(FIXTURES, "ranger_optimizer", "inputs.npz")))
    a = run_steps(ranger(1e-2), inputs)
    b = run_steps(ranger(1e-2, alpha=0.5, k=6, n_sma_threshold=5, betas=(0.95, 0.999),
                         eps=1e-5, weight_decay=0, use_gc=True, gc_conv_only=False), inputs)
    for x, y in zip(a, b):
        for name in NAMES:
            np.testing.assert_array_equal(x[name], y[name])


def test_ranger_each_component_matters(fixture):
    # Without centralization, or with another lookahead period, the fixture is missed: the
    # parity above is not a coincidence of one part dominating.
    inputs, expected, _ = fixture
    for opt in (ranger(1e-2, use_gc=False), ranger(1e-2, k=5), ranger(1e-2, n_sma_threshold=7)):
        history = run_steps(opt, inputs)
        got = np.stack([h["conv.weight"] for h in history])
        assert np.abs(got - expected["params/conv.weight"]).max() > 1e-4


def test_gradient_centralization_flax_axes():
    g = {"k": jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5) ** 1.5,
         "d": jnp.arange(12, dtype=jnp.float32).reshape(3, 4) ** 2, "b": jnp.arange(4.0)}
    out, _ = centralize_gradients().update(g, optax.EmptyState())
    np.testing.assert_allclose(np.asarray(out["k"]).mean(axis=(0, 1, 2)), 0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(out["d"]).mean(axis=0), 0, atol=1e-5)
    np.testing.assert_array_equal(out["b"], g["b"])  # 1-d: untouched
    out_conv_only, _ = centralize_gradients(gc_conv_only=True).update(g, optax.EmptyState())
    np.testing.assert_array_equal(out_conv_only["d"], g["d"])


def test_lookahead_needs_params_and_valid_args():
    la = lookahead(2, 0.5)
    params = {"w": jnp.ones(3)}
    state = la.init(params)
    with pytest.raises(ValueError, match="params"):
        la.update(params, state)
    with pytest.raises(ValueError, match="sync_period"):
        lookahead(0)
    with pytest.raises(ValueError, match="learning rate"):
        ranger(0.0)


def test_adam_matches_torch(fixture):
    torch = pytest.importorskip("torch", reason="torch is the reference for the Adam option")
    inputs, _, _ = fixture
    lr = 1e-2
    tparams = [torch.nn.Parameter(torch.from_numpy(inputs[f"init/{n}"].copy())) for n in NAMES]
    topt = torch.optim.Adam(tparams, lr=lr)
    want = []
    for t in range(STEPS):
        for p, n in zip(tparams, NAMES):
            p.grad = torch.from_numpy(inputs[f"grad/{n}/{t}"].copy())
        topt.step()
        want.append({n: p.detach().numpy().copy() for p, n in zip(tparams, NAMES)})
    history = run_steps(make_optimizer("adam", lr), inputs)
    for name in NAMES:
        assert_close(f"adam {name} (20 steps)", np.stack([h[name] for h in history]),
                     np.stack([w[name] for w in want]), atol=1e-6)


def test_make_optimizer_names():
    for name in ("ranger", "adam", "sgd", "Ranger"):
        assert isinstance(make_optimizer(name, 1e-4), optax.GradientTransformation)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("adagrad", 1e-4)


def test_radam_table_joins_float32_formula():
    # Past the float64 table the float32 formula takes over; a run that switches at step 300
    # follows the one that stays on the table to float32 rounding.
    from e4e_jax.core.optim import scale_by_official_radam

    grads = jax.random.normal(jax.random.PRNGKey(0), (700, 16))

    def run(table_steps):
        opt = scale_by_official_radam(table_steps=table_steps)
        state = opt.init(jnp.zeros(16))

        def body(state, g):
            u, state = opt.update(g, state)
            return state, u

        return jax.lax.scan(body, state, grads)[1]

    short, long = run(300), run(4096)
    np.testing.assert_array_equal(short[:300], long[:300])
    assert_close("radam step 301..700 (float32 formula vs float64 table)", short[300:],
                 long[300:], atol=0, rtol=2e-6)
