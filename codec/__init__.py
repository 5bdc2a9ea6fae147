"""Entropy coding and the .vz container: numpy + constriction (never torch); numba, where installed, compiles the
blend predictor's coder (blend_kernel.py: the same bits without it)."""
