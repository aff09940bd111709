"""The trainer, in small modules: config, data, loss, validation, checkpoint, distributed, selftrain, loop."""
