"""Entry points of the training stages, evaluation and serving; each short and readable."""
