"""Readers for public product datasets; the user brings the files (METHODS.md section 6)."""
from . import amazon_metadata, farfetch_ffoc, fashion_product_images, rakuten_sigir20, shopee_price_match

SPECS = [*amazon_metadata.SPECS, *fashion_product_images.SPECS, *shopee_price_match.SPECS,
         *rakuten_sigir20.SPECS, *farfetch_ffoc.SPECS]
