"""The Ray layer: where the pure functions of ``grouping`` run, on how many workers, with
which resources. Sharding never changes results."""
