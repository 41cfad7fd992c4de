"""e4e_jax.core.conv: same forward and input gradient as lax.conv_general_dilated, the weight
gradient within float32 rounding, and an input gradient that keeps the plain kernel layout inside
a compiled loop (the reason the module exists)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e4e_jax.core.conv import conv2d, conv_general_dilated

DN = ("NHWC", "HWIO", "NHWC")
# (size, in, out, kernel, stride, pad): the generator's 3x3 and its up-sampling phases (2 and 1
# taps, full padding), LPIPS-alex's 11x11 / 4 and 5x5, a stride-2 3x3
CASES = [(9, 5, 6, 3, 1, 1), (9, 5, 6, 2, 1, 1), (9, 5, 6, 1, 1, 0), (35, 3, 8, 11, 4, 2),
         (12, 4, 6, 5, 1, 2), (12, 4, 6, 3, 2, 1)]


def _reference(x, w, s, p):
    return jax.lax.conv_general_dilated(x, w, (s, s), [(p, p)] * 2, dimension_numbers=DN)


@pytest.mark.parametrize("size,cin,cout,k,s,p", CASES)
def test_forward_and_gradients_match_lax(size, cin, cout, k, s, p):
    rng = np.random.default_rng(size * 100 + k)
    x = jnp.asarray(rng.standard_normal((2, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout)), jnp.float32)
    ours = lambda x, w: conv2d(x, w, (s, s), ((p, p), (p, p)), None)  # noqa: E731
    ref = lambda x, w: _reference(x, w, s, p)  # noqa: E731
    np.testing.assert_array_equal(jax.jit(ours)(x, w), jax.jit(ref)(x, w))
    loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))  # noqa: E731
    dx, dw = jax.jit(jax.grad(loss(ours), (0, 1)))(x, w)
    dx_ref, dw_ref = jax.jit(jax.grad(loss(ref), (0, 1)))(x, w)
    np.testing.assert_array_equal(dx, dx_ref)  # the same convolution, kernel swapped in memory
    err = float(jnp.max(jnp.abs(dw - dw_ref)) / jnp.max(jnp.abs(dw_ref)))
    print(f"[conv] {size}px {cin}->{cout} k{k} s{s}: dw max rel err {err:.1e}")
    assert err < 1e-5


def test_drop_in_falls_back_for_what_it_does_not_cover():
    x = jnp.ones((1, 8, 8, 4))
    w = jnp.ones((3, 3, 4, 4))
    same = conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)
    np.testing.assert_array_equal(same, _reference(x, w, 1, 1))
    dilated = conv_general_dilated(x, w, (1, 1), [(2, 2), (2, 2)], rhs_dilation=(2, 2),
                                   dimension_numbers=DN)
    assert dilated.shape == (1, 8, 8, 4)
    grouped = conv_general_dilated(x, jnp.ones((3, 3, 1, 4)), (1, 1), [(1, 1), (1, 1)],
                                   dimension_numbers=DN, feature_group_count=4)
    assert grouped.shape == (1, 8, 8, 4)


def _kernel_labels_in_loop(conv):
    x = jnp.ones((1, 16, 16, 8))
    w = jnp.ones((3, 3, 8, 8))

    def body(_, x):
        return x - 0.01 * jax.grad(lambda a: jnp.sum(jnp.square(conv(conv(a, w), w))))(x)

    text = jax.jit(lambda x: jax.lax.fori_loop(0, 2, body, x)).lower(x).compile().as_text()
    return set(re.findall(r"dim_labels=b01f_(\w+)->", text))


def test_input_gradient_keeps_the_plain_kernel_layout_in_a_loop():
    ours = _kernel_labels_in_loop(lambda a, w: conv2d(a, w, (1, 1), ((1, 1), (1, 1)), None))
    assert ours == {"01io"}, ours
    # what autodiff of lax's convolution gives in the same loop (if XLA ever stops emitting the
    # swapped labels, the module's workaround can go)
    plain = _kernel_labels_in_loop(lambda a, w: _reference(a, w, 1, 1))
    print(f"[conv] kernel labels in a loop: ours {ours}, autodiff of lax {plain}")


def test_vmapped_weight_gradient_is_per_example():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 1, 6, 6, 2)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 2, 4)), jnp.float32)
    grad = lambda f: jax.vmap(jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), 1))  # noqa: E731
    ours = grad(lambda x, w: conv2d(x, w, (1, 1), ((1, 1), (1, 1)), None))(x, w)
    ref = grad(lambda x, w: _reference(x, w, 1, 1))(x, w)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
