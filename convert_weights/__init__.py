"""Converters from the official PyTorch checkpoint formats to e4e_jax model directories.

Each module is a CLI (`python convert_weights/<name>.py ...`) and exposes a pure
`convert_*` function from a numpy state dict, which the tests call directly.
"""
