"""Edit specs bound to a model: data loaded, checked against its W+ shape, jitted per shape.

    edits = prepare_edits(["sefa:0", "interfacegan:age.pt:3"], inv.generator, inv.n_latent)
    w_edit = edits[0].apply(w_plus, (-3.0, 3.0))      # (N, 2, n_latent, style_dim)
    lec_edit = edits[1].linear()                       # invertible, for LEC
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from e4e_jax.editing.spec import EditSpec, EditSpecError, parse_edit_spec


class PreparedEdit:
    """An EditSpec with its data loaded and checked against a model's W+ shape.

    `apply(w_plus, strengths)` -> (N, len(strengths), n_latent, S): the official edit at each
    strength (InterFaceGAN w + s d; GANSpace's coordinate set to s; SeFa w + s v on the rows of
    its layers), jitted once per batch shape. `linear(strength)` -> an invertible
    `editing.LinearEdit` for the Latent Editing Consistency.
    """

    def __init__(self, spec: EditSpec, generator, n_latent: int,
                 sefa_cache: dict | None = None):
        import jax

        from e4e_jax import editing
        self.spec = spec
        self.n_latent = int(n_latent)
        self.style_dim = int(generator.style_dim)
        self.first_row = editing.first_style_row(generator)   # StyleGAN3: 1
        self._editing = editing
        try:
            if spec.kind == "interfacegan":
                self.direction = editing.load_interfacegan_direction(spec.path)
            elif spec.kind == "ganspace":
                self.pca = editing.load_ganspace_pca(spec.path)
                k = self.pca["std"].shape[0]
                if spec.index >= k:
                    raise EditSpecError(f"edit spec {spec.text!r}: the PCA has {k} components "
                                        f"(IDX 0..{k - 1}), got IDX {spec.index}.")
                if spec.rows[1] > self.n_latent:
                    raise EditSpecError(f"edit spec {spec.text!r}: rows {spec.rows[0]}.."
                                        f"{spec.rows[1] - 1} do not fit the {self.n_latent} W+ "
                                        f"rows of this model.")
            else:
                count = self.n_latent - 1  # StyleGAN2: conv1 + convs; StyleGAN3: layers
                if spec.layers != "all" and max(spec.layers) >= count:
                    raise EditSpecError(f"edit spec {spec.text!r}: this generator has style "
                                        f"layers 0..{count - 1}, got {list(spec.layers)}.")
                cache = {} if sefa_cache is None else sefa_cache
                if spec.layers not in cache:      # one factorization per layer set
                    cache[spec.layers] = editing.sefa(generator, spec.layers)
                _, vectors = cache[spec.layers]
                if spec.index >= vectors.shape[0]:
                    raise EditSpecError(f"edit spec {spec.text!r}: SEMANTIC must be < "
                                        f"{vectors.shape[0]}.")
                self.vector = vectors[spec.index]
            # shape problems (a 512-d direction on a 32-d model, 18 rows on 14) show up here
            self._impl(np.zeros((1, self.n_latent, self.style_dim), np.float32), (1.0,))
        except EditSpecError:
            raise
        except FileNotFoundError as e:
            raise EditSpecError(f"edit spec {spec.text!r}: {e}") from e
        except (ValueError, TypeError, ImportError) as e:
            raise EditSpecError(f"edit spec {spec.text!r} does not fit this model: {e}") from e
        self._jitted: dict[tuple, Callable] = {}
        self._jax = jax

    def _impl(self, w, strengths: tuple[float, ...]):
        import jax.numpy as jnp
        ed, spec = self._editing, self.spec
        n = w.shape[0]
        shape = (n, len(strengths), self.n_latent, self.style_dim)
        if spec.kind == "interfacegan":
            out = [ed.interfacegan_edit(w, self.direction, factor=s) for s in strengths]
            return jnp.stack(out, axis=1)
        if spec.kind == "ganspace":
            edits = [(spec.index, spec.rows[0], spec.rows[1], s) for s in strengths]
            return ed.ganspace_edit(w, self.pca, edits).reshape(shape)        # code-major
        return ed.sefa_edit(w, self.vector, 0, spec.layers, distances=strengths,
                            first_row=self.first_row).reshape(shape)

    def apply(self, w_plus, strengths: Sequence[float]):
        """(N, n_latent, S) codes -> (N, len(strengths), n_latent, S) edited codes (jitted once
        per strengths tuple and batch shape)."""
        strengths = tuple(float(s) for s in strengths)
        fn = self._jitted.get(strengths)
        if fn is None:
            fn = self._jitted[strengths] = self._jax.jit(lambda w: self._impl(w, strengths))
        return fn(w_plus)

    def linear(self, strength: float | None = None):
        """The invertible version for LEC: InterFaceGAN and SeFa are shifts already; GANSpace
        becomes a shift by `strength` standard deviations (see editing.LinearEdit.ganspace)."""
        ed, spec = self._editing, self.spec
        s = spec.default_strength if strength is None else float(strength)
        if spec.kind == "interfacegan":
            return ed.LinearEdit.interfacegan(self.direction, s)
        if spec.kind == "ganspace":
            return ed.LinearEdit.ganspace(self.pca, spec.index, spec.rows[0], spec.rows[1], s,
                                          self.n_latent)
        return ed.LinearEdit.sefa(self.vector, s, spec.layers, self.n_latent,
                                  first_row=self.first_row)


def prepare_edits(specs: Sequence[str | EditSpec], generator, n_latent: int
                  ) -> list[PreparedEdit]:
    """Parses and loads edit specs for a model (SeFa factorizations computed once per layer
    set); raises EditSpecError naming the bad one."""
    out, cache = [], {}
    for s in specs:
        spec = s if isinstance(s, EditSpec) else parse_edit_spec(s)
        out.append(PreparedEdit(spec, generator, n_latent, sefa_cache=cache))
    return out
