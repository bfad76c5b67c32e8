"""Metrics: classification (accuracy, macro-F1, top-k, head/tail) and retrieval (NDCG, MAR, MAP, F1)."""
