"""Built-in task plugins: what a trial is asked to do and how it is scored."""
from bench import hookimpl
from bench.api.registry import PluginSpec
from bench.trial.item_task import ItemTask, RetrievalTask

from .pairs import PairsTask

SPECS = [
    PluginSpec("task", "classification", "item categorization: accuracy, macro-F1, top-5, head/tail macro-F1 "
                                          "(and same-product retrieval when the catalogue has product groups)",
               ItemTask),
    PluginSpec("task", "retrieval", "same-product retrieval: items ranked by embedding similarity "
                                     "(nDCG@k, mAR@k, mAP@k, MRR@k, recall@1, threshold F1)", RetrievalTask),
    PluginSpec("task", "matching", "the retrieval task under its earlier name", RetrievalTask),
    PluginSpec("task", "pairs", "labelled (left, right) pairs split by pair: pair AP, and precision / recall / F1 "
                                "at the dev-chosen threshold", PairsTask),
]


@hookimpl
def bench_tasks():
    return SPECS
