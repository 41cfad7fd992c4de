"""Shared pieces of the experiment configs in configs/ (ml_collections).

A config file calls `base_config()`, sets its domain, and passes the command-line argument
string (`--config configs/ffhq_encode.py:D,runlocal`) to `apply_args`, which applies the paper's
ablation variant (Table 2) and the `runlocal` shrink.

Field reference (defaults are the paper's / the official code's):

    seed                         everything random (init, data order, flips, noise, W pool) derives
                                 from it
    dataset_type                 official name (ffhq_encode, cars_encode, ...); informational
    data.kind                    "images" (folders or TFDS) or "synthetic" (the generator's own W)
    data.train / data.test       an image folder, or "tfds:NAME:SPLIT" (read from data.data_dir)
    data.input_size              encoder input (H, W): 256x256, cars 192x256
    data.flip_prob               RandomHorizontalFlip of the training transform (0.5)
    generator.path               converted generator directory (`e4e-jax convert stylegan2` or
                                 stylegan2_ada.py); or generator.init for a seeded random one:
                                 {resolution, max_channels, n_mlp, kind: stylegan2 | stylegan3,
                                 num_layers (stylegan3)}; `e4e-jax convert stylegan3`
                                 directories load as StyleGAN3. One of the two: a path
                                 with generator.init.resolution > 0 is refused at start-up,
                                 except that train.py's explicit --config.generator.path
                                 (without --config.generator.init.*) switches a config's
                                 random generator (the demo's) to that directory, saying so
    encoder.checkpoint           read only with encoder.init="checkpoint" (refused otherwise)
    generator_class              class index K for a class-conditional StyleGAN2-ADA generator
                                 (c_dim > 0): every z is mapped with the one-hot label K; None
                                 (default) for unconditional generators (a conditional one is
                                 then refused at start-up, naming this option)
    encoder.type                 Encoder4Editing | GradualStyleEncoder | SingleStyleCodeEncoder,
                                 or a ReStyle encoder: ProgressiveBackboneEncoder (ReStyle-e4e),
                                 BackboneEncoder (ReStyle-pSp), ResNet* (num_layers 34, mode
                                 'resnet34'); e4e_jax.train.restyle
    encoder.n_iters_per_batch    ReStyle: encoder passes per batch, each one's loss and gradient
                                 summed into one update (None: the official 5); refused for
                                 the other encoders
    encoder.num_layers/mode      IR-SE depth (50/100/152) and 'ir' | 'ir_se'
    encoder.widths/units         None = official; small values for the CPU demo
    encoder.head_width           width of the style heads' convs; None = style_dim (official)
    encoder.init                 "arcface" (backbone from a converted ArcFace IR-SE-50, like the
                                 official), "random", or "checkpoint" (everything from
                                 encoder.checkpoint, a converted e4e/pSp directory, to fine-tune)
    start_from_latent_avg        add latent_avg to the codes (official --start_from_latent_avg)
    latent_avg_samples           latent_avg = mean of this many mapped z when the generator has none
    output.face_pool             reconstructions are pooled to this size (official 256)
    output.crop_rows             cars: (32, 224) rows of the pooled output
    losses.<name>                weight of each named loss term (e4e_jax.losses registry); 0 = off
    loss_options.<name>          keyword options of a term (e.g. d_reg p = delta_norm 2)
    loss_nets.lpips / id         converted LPIPS / ArcFace or MoCo directories
    loss_nets.id_kind            "arcface" (faces) or "moco" (other domains)
    progressive.start / every    stage k starts at start + (k - 1) * every; start None = off
    optimizer.name / lr          "ranger" (official) or "adam"; 1e-4
    discriminator.*              Adam lr 2e-5, r1 gamma 10 every d_reg_every=16 steps, W pool
    batch_size, max_steps        global batch (split over all devices and hosts), last step
    log_every, image_every, val_every, save_every, keep_checkpoints
    holdout                      held-out images: the image grids, summary.json's mse_before /
                                 mse_after (e4e_jax.data.train_sets, e4e_jax.data.synthetic)
    max_val_batches              validation set: test_batch_size x this many images (None: the
                                 whole test set; 4 batches for the synthetic domain)
    evals.<name>                 evaluations during training (e4e_jax.train.validation):
                                 {type: "distortion" | "losses", data: "holdout" |
                                 "validation", every: steps (None: val_every)}; TensorBoard
                                 `<name>/<metric>`. Defaults: `holdout` (eval.py's distortion
                                 metrics: mse, mse_raw, lpips / identity when loaded) and `test`
                                 (the validation losses, official Coach.validate)
    best_metric                  the TensorBoard scalar WORKDIR/best minimises ("test/loss")
    dtype / precision / remat    compute dtype "float32" | "bfloat16", matmul precision None |
                                 "default" | "high" | "highest", "none" | "blocks" (e4e_jax.core.precision)
"""
from __future__ import annotations

import ml_collections

VARIANTS = ("A", "B", "C", "D")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset_type = "ffhq_encode"

    c.data = ml_collections.ConfigDict()
    c.data.kind = "images"
    c.data.train = ""
    c.data.test = ""
    c.data.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.data.input_size = (256, 256)
    c.data.flip_prob = 0.5
    c.data.synthetic_noise = "random"

    c.generator = ml_collections.ConfigDict()
    c.generator.path = ml_collections.FieldReference(None, field_type=str)
    c.generator.init = ml_collections.ConfigDict()
    c.generator.init.resolution = 0          # 0: load generator.path
    c.generator.init.max_channels = 0
    c.generator.init.n_mlp = 8
    c.generator.init.kind = "stylegan2"      # or "stylegan3" (config T; configs/demo_sg3.py)
    c.generator.init.num_layers = 0          # stylegan3: synthesis layers (0: official 14)
    # class-conditional StyleGAN2-ADA generators (c_dim > 0): the fixed class index every mapped
    # z uses (synthetic domain, the latent discriminator's real w, latent_avg); None: refused
    c.generator_class = ml_collections.FieldReference(None, field_type=int)

    c.encoder = ml_collections.ConfigDict()
    c.encoder.type = "Encoder4Editing"
    c.encoder.num_layers = 50
    c.encoder.mode = "ir_se"
    c.encoder.widths = ml_collections.FieldReference(None, field_type=tuple)
    c.encoder.units = ml_collections.FieldReference(None, field_type=tuple)
    c.encoder.head_width = ml_collections.FieldReference(None, field_type=int)
    c.encoder.init = "arcface"
    c.encoder.arcface = "pretrained/arcface_ir_se50"
    c.encoder.checkpoint = ml_collections.FieldReference(None, field_type=str)
    # ReStyle encoders only: encoder passes per batch (None: the official 5)
    c.encoder.n_iters_per_batch = ml_collections.FieldReference(None, field_type=int)

    c.start_from_latent_avg = True
    c.latent_avg_samples = 10000

    c.output = ml_collections.ConfigDict()
    c.output.face_pool = 256
    c.output.crop_rows = ml_collections.FieldReference(None, field_type=tuple)

    c.losses = ml_collections.ConfigDict()
    c.losses.l2 = 1.0
    c.losses.lpips = 0.8
    c.losses.id = 0.1
    c.losses.d_reg = 2e-4
    c.losses.adv = 0.1
    c.loss_options = ml_collections.ConfigDict()
    c.loss_options.d_reg = ml_collections.ConfigDict({"p": 2})
    c.loss_nets = ml_collections.ConfigDict()
    c.loss_nets.lpips = "pretrained/lpips_alex"
    c.loss_nets.id = "pretrained/arcface_ir_se50"
    c.loss_nets.id_kind = "arcface"

    c.progressive = ml_collections.ConfigDict()
    c.progressive.start = ml_collections.FieldReference(20000, field_type=int)
    c.progressive.every = 2000

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "ranger"
    c.optimizer.lr = 1e-4

    c.discriminator = ml_collections.ConfigDict()
    c.discriminator.lr = 2e-5
    c.discriminator.r1 = 10.0
    c.discriminator.d_reg_every = 16
    c.discriminator.use_w_pool = True
    c.discriminator.w_pool_size = 50

    c.batch_size = 8
    c.test_batch_size = 8
    c.dtype = "float32"
    c.precision = ml_collections.FieldReference(None, field_type=str)
    c.remat = "none"
    c.max_steps = 500000
    c.log_every = 50                 # official board_interval
    c.image_every = 100              # official image_interval
    c.val_every = 1000               # official val_interval
    c.save_every = 5000
    c.keep_checkpoints = 3
    c.max_val_batches = ml_collections.FieldReference(None, field_type=int)
    c.holdout = 16                   # test images behind summary.json's mse_before / mse_after
    c.num_grid_images = 4
    c.evals = ml_collections.ConfigDict()
    # eval.py's distortion metrics of the held-out images (clamped `mse` is eval.py's figure,
    # `mse_raw` the unclamped one); also summary.json's mse_before / mse_after
    c.evals.holdout = _evaluation("distortion", "holdout")
    # the loss terms of the validation step (official Coach.validate)
    c.evals.test = _evaluation("losses", "validation")
    c.best_metric = "test/loss"

    c.distributed = ml_collections.ConfigDict()
    c.distributed.initialize = False
    c.distributed.coordinator_address = ml_collections.FieldReference(None, field_type=str)
    c.distributed.num_processes = ml_collections.FieldReference(None, field_type=int)
    c.distributed.process_id = ml_collections.FieldReference(None, field_type=int)
    # seconds every process waits for the others to join (a progress line meanwhile; then one
    # line naming the processes that did not arrive): e4e_jax.train.distributed
    c.distributed.initialization_timeout = 300
    return c


def _evaluation(kind: str, data: str) -> ml_collections.ConfigDict:
    """One entry of config.evals (fields: e4e_jax.train.validation)."""
    e = ml_collections.ConfigDict()
    e.type = kind
    e.data = data
    e.every = ml_collections.FieldReference(None, field_type=int)   # None: config.val_every
    return e


def apply_variant(c: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """The paper's Table 2 configurations; the distortion losses are kept in all of them.

    A: pSp encoder (GradualStyleEncoder), no d-reg, no latent discriminator
    B: e4e encoder, progressive training + delta regularization, no discriminator
    C: e4e encoder, latent discriminator, no d-reg (all deltas from the start)
    D: e4e encoder, d-reg + discriminator (the full method, the default)
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}.")
    c.variant = variant
    if variant == "A":
        c.encoder.type = "GradualStyleEncoder"
    if variant in ("A", "C"):
        c.losses.d_reg = 0.0
        c.progressive.start = None
    if variant in ("A", "B"):
        c.losses.adv = 0.0
    return c


RESTYLE_KINDS = ("e4e", "psp")


def restyle_variant(c: ml_collections.ConfigDict, kind: str = "e4e",
                    n_iters_per_batch: int = 5) -> ml_collections.ConfigDict:
    """ReStyle's official training settings over a domain config (configs/restyle_*.py).

    From yuval-alaluf/restyle-encoder at 5e80276228cc5d9e0a39a16119210ee49ce2c975: the README's
    train_restyle_psp.py / train_restyle_e4e.py commands (batch 8, lpips 0.8, l2 1, id 0.1 on
    faces / moco 0.5 elsewhere, n_iters_per_batch 5, start_from_latent_avg; ReStyle-e4e:
    delta_norm 2e-4, w_discriminator 0.1 with the W pool, progressive start 20000 every 2000;
    ReStyle-pSp: w_norm 0, val_interval 5000, save_interval 10000) and its "Additional Notes":
    faces (id_kind "arcface") use the IR-SE-50 backbone (BackboneEncoder /
    ProgressiveBackboneEncoder, started from ArcFace as officially), the other domains ResNet-34
    (ResNetBackboneEncoder / ResNetProgressiveBackboneEncoder; the official start is
    torchvision's ImageNet resnet34, which is not converted here, so encoder.init='random').
    options/train_options.py's defaults (Ranger, lr 1e-4, input_nc 6, max_steps 500000) are
    base_config's. kind: "e4e" or "psp"; ValueError otherwise.
    """
    if kind not in RESTYLE_KINDS:
        raise ValueError(f"unknown ReStyle kind {kind!r}; choose one of {RESTYLE_KINDS}.")
    faces = c.loss_nets.id_kind == "arcface"
    prefix = "" if faces else "ResNet"
    c.encoder.type = prefix + ("ProgressiveBackboneEncoder" if kind == "e4e" else
                               "BackboneEncoder")
    if not faces:
        c.encoder.num_layers = 34
        c.encoder.mode = "resnet34"
        c.encoder.init = "random"
    c.encoder.n_iters_per_batch = int(n_iters_per_batch)
    c.start_from_latent_avg = True
    c.batch_size = 8
    c.test_batch_size = 8
    c.losses.l2 = 1.0
    c.losses.lpips = 0.8
    if kind == "psp":
        c.losses.d_reg = 0.0
        c.losses.adv = 0.0
        c.progressive.start = None
        c.val_every = 5000
        c.save_every = 10000
    else:
        c.losses.d_reg = 2e-4
        c.losses.adv = 0.1
        c.discriminator.use_w_pool = True
        c.progressive.start = 20000
        c.progressive.every = 2000
    c.variant = "restyle_" + kind
    return c


def sibling_config(config_file: str, name: str, arg: str | None = None):
    """get_config(arg) of configs/`name` beside `config_file` (a config's __file__): a config
    built on another one. configs/ is not a package (train.py loads a config by its path), so
    the sibling is loaded from its file."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
    spec = importlib.util.spec_from_file_location("_config_" + name.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def restyle_domain_config(config_file: str, domain: str, arg: str | None = None):
    """configs/restyle_<domain>_encode.py: configs/<domain>_encode.py with restyle_variant.
    `arg` is a comma-separated list of `e4e` (default) or `psp`, `n=K` (n_iters_per_batch,
    official 5) and `runlocal`; ValueError names any other."""
    tokens = [t.strip() for t in (arg or "").split(",") if t.strip()]
    kinds = [t for t in tokens if t in RESTYLE_KINDS]
    n = [t for t in tokens if t.startswith("n=")]
    rest = [t for t in tokens if t not in kinds and t not in n]
    c = sibling_config(config_file, f"{domain}_encode.py")
    c = restyle_variant(c, kinds[-1] if kinds else "e4e",
                        int(n[-1].split("=", 1)[1]) if n else 5)
    if "runlocal" in rest:
        runlocal(c)
        rest.remove("runlocal")
    if rest:
        raise ValueError(f"unknown config argument(s) {', '.join(rest)}: expected e4e or psp, "
                         f"n=K and/or runlocal.")
    return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a config to a smoke run on one CPU (same code paths, tiny sizes)."""
    c.batch_size = 2
    c.test_batch_size = 2
    c.max_steps = 10
    c.log_every = 2
    c.image_every = 5
    c.val_every = 5
    c.save_every = 5
    c.max_val_batches = 2
    c.holdout = 2
    c.latent_avg_samples = 256
    if c.progressive.start is not None:
        c.progressive.start = 2
        c.progressive.every = 2
    return c


def apply_args(c: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """`arg` is the comma-separated string after ':' in --config: a variant letter, runlocal."""
    c.variant = "D"
    for token in filter(None, (arg or "").split(",")):
        token = token.strip()
        if token.startswith("variant="):
            token = token.split("=", 1)[1]
        if token in VARIANTS:
            apply_variant(c, token)
        elif token == "runlocal":
            runlocal(c)
        else:
            raise ValueError(f"unknown config argument {token!r}: expected one of {VARIANTS} "
                             f"(or variant=X) and/or 'runlocal'.")
    return c
