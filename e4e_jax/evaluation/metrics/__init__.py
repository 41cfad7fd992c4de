"""Evaluation metrics of the paper (sections 7 and 8): FID, SWD, LEC and proximity to W.

Perception / editability
    load_inception(dir) -> LoadedInception           FID Inception-v3 of pytorch-fid (converted
                                                     with `e4e-jax convert fid_inception`)
    inception.features(images) -> (N, 2048)          pool3 features, batched, jitted once
    fid_statistics(features) -> (mu, sigma)          np.mean / np.cov(rowvar=False), float64
    frechet_distance(mu1, sigma1, mu2, sigma2)       pytorch-fid's calculate_frechet_distance
    fid(inception, images_a, images_b)               features + statistics + distance
    maybe_load_inception(dir) -> (inception | None, reason)   FID is optional in an evaluation
    swd(images_a, images_b, seed=0) -> dict          sliced Wasserstein distance over Laplacian
                                                     pyramid patches (Karras et al. 2018), x1e3
Latent editing consistency (eq. 8)
    latent_editing_consistency(images, encode, generate, edit, inverse_edit)
Proximity to W (section 8.2)
    latent_variation(w_plus)                          mean ||w - w_mu||_2 over images
    latent_deviation(encode, generate, mapping, n_latent, n_samples=5000)
                                                     E_w ||E(G(w)) - w||_2

Every metric streams its input in fixed-size batches: the last, partial batch is padded (by
repeating its last image) and the padded rows are dropped, so each jitted function compiles once
for a whole evaluation. Inputs are numpy / jax arrays (N, ...) or iterables of such batches
(tuples `(images, ...)` from a data loader are accepted; the first item is used).

Modules: `batching`, `fid`, `swd`, `latent`; their public names are re-exported here.
"""
from __future__ import annotations

from e4e_jax.evaluation.metrics.batching import (  # noqa: F401
    HIGHEST,
    as_float_images,
    first_leaf,
    images_to_uint8,
    iterate_batches,
    run_batched,
)
from e4e_jax.evaluation.metrics.fid import (  # noqa: F401
    FID_METHODS,
    INCEPTION_KIND,
    FrechetResult,
    LoadedInception,
    fid,
    fid_from_features,
    fid_statistics,
    frechet_distance,
    frechet_distance_details,
    load_inception,
    maybe_load_inception,
)
from e4e_jax.evaluation.metrics.latent import (  # noqa: F401
    filter_outliers,
    latent_deviation,
    latent_editing_consistency,
    latent_variation,
)
from e4e_jax.evaluation.metrics.swd import (  # noqa: F401
    BINOMIAL,
    SWD_MIN_RESOLUTION,
    SWDDescriptors,
    laplacian_pyramid,
    pyr_down,
    pyr_up,
    sliced_wasserstein,
    swd,
    swd_between,
    swd_resolutions,
)

__all__ = ['BINOMIAL', 'FID_METHODS', 'FrechetResult', 'HIGHEST', 'INCEPTION_KIND', 'LoadedInception', 'SWDDescriptors', 'SWD_MIN_RESOLUTION', 'fid', 'fid_from_features', 'fid_statistics', 'filter_outliers', 'frechet_distance', 'frechet_distance_details', 'images_to_uint8', 'iterate_batches', 'laplacian_pyramid', 'latent_deviation', 'latent_editing_consistency', 'latent_variation', 'load_inception', 'maybe_load_inception', 'pyr_down', 'pyr_up', 'run_batched', 'sliced_wasserstein', 'swd', 'swd_between', 'swd_resolutions']
