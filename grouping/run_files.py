"""The names of the files a run directory holds, relative to it, in one place: the stages
that write them, the report that reads them and the benchmarks that reuse a run all name
them from here. results/README.md says what each holds."""

CONFIG = "config.yaml"
MANIFEST = "manifest.json"

# linear: one logistic regression per task
LINEAR_MODEL = "linear_model.npz"
PER_TASK_LINEAR = "per_task_linear.json"
# base: the multitask model θ0 every estimate is taken at
BASE_MODEL = "base_model.pt"
BASE_METRICS = "base_metrics.json"
# gradients: the rows, their base outputs f0 and projected output gradients
GRADIENT_ROWS = "gradients/rows.npz"
GRADIENT_F0 = "gradients/f0.npy"
GRADIENT_FEATURES = "gradients/features.npy"
# estimates (or true_subsets): f̂(S, i) (or f(S, i)) of every sampled subset
SUBSET_LOSSES = "subset_losses.npz"
SUBSET_LOSSES_CSV = "subset_losses.csv"
AFFINITY = "affinity.npy"
TRUE_LOSSES = "true_losses.npz"
TRUE_AFFINITY = "true_affinity.npy"
GROUPS = "groups.json"
ERROR_REPORT = "error_report.json"
DMTG = "dmtg.json"
COMPARISON = "comparison.json"
TASK_METRICS = "task_metrics.json"
GROUP_MODELS = "group_models"
# the report
REPORT = "report.md"
SUMMARY = "summary.json"
AFFINITY_HEATMAP = "affinity_heatmap.png"
COMPARISON_CHART = "comparison.png"
DOMINANCE_CHART = "dominance.png"
ESTIMATE_SCATTER = "estimate_scatter.png"
