"""Built-in objective plugins; each module lists its plugins in SPECS."""
from bench import hookimpl

from . import contrastive_ssl, cross_entropy, labelled_pairs, metric_learning, pretraining


@hookimpl
def bench_objectives():
    return [*cross_entropy.SPECS, *contrastive_ssl.SPECS, *metric_learning.SPECS, *pretraining.SPECS,
            *labelled_pairs.SPECS]
