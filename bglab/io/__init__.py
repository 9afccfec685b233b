"""Reading and writing: image and mask files (atomic writes), config files, and the values users pass in
(colours, limits, seeds)."""
