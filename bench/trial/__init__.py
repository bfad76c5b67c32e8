"""One trial inside a worker: data, splits, model, training, selection and evaluation."""
