"""Flower ClientApp of MTMedFormer-FL: one hospital's local training (thin adapter over the library)."""
