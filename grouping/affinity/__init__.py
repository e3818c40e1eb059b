"""Grad-TAG affinity estimation (Li, Sharma, Zhang, "Scalable Multitask Learning Using
Gradient-based Estimation of Task Affinity", KDD 2024): projected output gradients at the base
model, linear surrogate fits per task subset, and aggregation into a task-affinity matrix."""
