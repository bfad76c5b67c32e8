"""Metrics: classification (accuracy, macro-F1, top-k, head/tail) and retrieval (ndcg, recall, precision, MAP, MRR, threshold F1)."""
