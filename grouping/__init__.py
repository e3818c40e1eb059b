"""Task grouping for multitask learning: Grad-TAG affinity estimation, SDP clustering,
group training and comparison. Pure library: nothing here imports ray."""
