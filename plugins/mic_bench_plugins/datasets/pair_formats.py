"""Readers for pair-labelled matching benchmarks (the pairs task)."""
from . import deepmatcher, wdc_products

SPECS = [*deepmatcher.SPECS, *wdc_products.SPECS]
