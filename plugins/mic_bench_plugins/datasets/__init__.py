"""Built-in dataset plugins; each module lists its plugins in SPECS."""
from bench import hookimpl

from . import pair_formats, public_formats, synthetic_catalog, table


@hookimpl
def bench_datasets():
    return [*synthetic_catalog.SPECS, *table.SPECS, *public_formats.SPECS, *pair_formats.SPECS]
