"""Population training and hyperparameter search: a sweep as one compiled program."""
