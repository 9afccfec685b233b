"""The one batch engine (``engine``): chunks of items through a worker, in a process ``pool`` or on Ray."""
