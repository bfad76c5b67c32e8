"""Where mic-bench keeps caches and results, and what `bench cache` does to them."""
