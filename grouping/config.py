"""YAML run configuration, validated into typed pydantic models.

Unknown keys, wrong types, out-of-range values, impossible combinations and missing files
raise :class:`ConfigError` with one line naming the field or file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A mistake in the user's configuration or input files; reported in one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Splits(_Strict):
    """Fractions of nodes in the training and validation splits; the rest is test."""

    train: float = Field(0.15, gt=0, lt=1)
    val: float = Field(0.30, gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_test(self) -> Splits:
        if self.train + self.val >= 1:
            raise ValueError("train + val must be below 1 so that a test split remains")
        return self


class SBMTaskSetConfig(_Strict):
    """Seeded stochastic block model with planted task families (grouping.tasksets.sbm)."""

    kind: Literal["sbm"]
    num_blocks: int = Field(16, ge=2)
    block_size: int = Field(150, ge=10)
    p_in: float = Field(0.04, gt=0, le=1)
    p_out: float = Field(0.0015, ge=0, le=1)
    num_families: int = Field(6, ge=1)
    tasks_per_family: int = Field(5, ge=1)
    drop_fraction: float = Field(0.1, ge=0, lt=1)
    flip_fraction: float = Field(0.2, ge=0, lt=0.5)
    splits: Splits = Splits()

    @model_validator(mode="after")
    def _families_fit(self) -> SBMTaskSetConfig:
        if self.num_families > self.num_blocks:
            raise ValueError("num_families must not exceed num_blocks (a family owns a block)")
        return self

    @property
    def num_tasks(self) -> int:
        return self.num_families * self.tasks_per_family


class SnapTaskSetConfig(_Strict):
    """SNAP edge list and ground-truth communities (grouping.tasksets.snap)."""

    kind: Literal["snap"]
    edges: Path
    communities: Path
    num_tasks: int = Field(100, ge=2)
    splits: Splits = Splits()


class TableTaskSetConfig(_Strict):
    """A multi-label table, CSV or ARFF by the file's suffix (grouping.tasksets.table): every
    label column is a binary task, every other column a numeric feature.

    The label columns are named by exactly one of ``labels`` (column names), ``first_labels``
    or ``last_labels`` (a count, by position in the data rows). The graph-only ``features``
    section does not apply.
    """

    kind: Literal["table"]
    path: Path
    labels: list[str] | None = Field(None, min_length=1)
    first_labels: int | None = Field(None, ge=1)
    last_labels: int | None = Field(None, ge=1)
    splits: Splits = Splits()

    @model_validator(mode="after")
    def _one_label_selector(self) -> TableTaskSetConfig:
        given = [self.labels, self.first_labels, self.last_labels]
        if sum(choice is not None for choice in given) != 1:
            raise ValueError("name the label columns with exactly one of labels, "
                             "first_labels or last_labels")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must not repeat a column")
        if self.file_format not in ("csv", "arff"):
            raise ValueError(f"path must end in .csv or .arff (optionally .gz): {self.path}")
        return self

    @property
    def file_format(self) -> str:
        """``csv`` or ``arff`` (from the suffix, ignoring a final ``.gz``)."""
        return self.path.name.lower().removesuffix(".gz").rpartition(".")[2]

    @property
    def num_tasks(self) -> int:
        if self.labels is not None:
            return len(self.labels)
        return self.first_labels or self.last_labels


class PythonTaskSetConfig(_Strict):
    """A task set made by the user's function (grouping.tasksets.custom).

    ``builder`` is ``"package.module:function"``; it is called as ``function(seed, **params)``
    and must return a :class:`grouping.tasksets.TaskSet` with exactly ``num_tasks`` tasks
    (declared here so that the other sections can be checked before anything is built). The
    graph-only ``features`` section does not apply.
    """

    kind: Literal["python"]
    builder: str
    params: dict[str, Any] = {}
    num_tasks: int = Field(ge=2)

    @field_validator("builder")
    @classmethod
    def _module_and_function(cls, builder: str) -> str:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", builder):
            raise ValueError(f"expected 'package.module:function', found {builder!r}")
        return builder


class InstructionFieldsConfig(_Strict):
    """Field names of a JSONL instruction record."""

    task: str = "task"
    instruction: str = "definition"
    input: str = "input"
    output: str = "output"
    split: str = "split"


class InstructionsTaskSetConfig(_Strict):
    """Instruction tasks for a language model (grouping.tasksets.instructions).

    ``source: generated`` builds the seeded offline suite (``num_families`` skills of at most
    10, ``tasks_per_family`` instructions of at most 6 per skill); ``source: jsonl`` reads
    ``path`` (a .jsonl file, or a folder with one .jsonl file per task) and keeps the
    ``num_tasks`` tasks with the most examples. Splits apply where records carry none.
    """

    kind: Literal["instructions"]
    source: Literal["generated", "jsonl"] = "generated"
    path: Path | None = None
    fields: InstructionFieldsConfig = InstructionFieldsConfig()
    num_tasks: int = Field(50, ge=2)
    num_families: int = Field(10, ge=1, le=10)
    tasks_per_family: int = Field(5, ge=1, le=6)
    examples_per_task: int = Field(40, ge=4)
    answer_noise: float = Field(0.0, ge=0, lt=1)
    splits: Splits = Splits(train=0.5, val=0.25)

    @model_validator(mode="after")
    def _source_fields(self) -> InstructionsTaskSetConfig:
        if self.source == "jsonl" and self.path is None:
            raise ValueError("path is required when source is 'jsonl'")
        if self.source == "generated" and self.num_tasks != (
                self.num_families * self.tasks_per_family):
            raise ValueError(f"num_tasks must equal num_families × tasks_per_family "
                             f"({self.num_families * self.tasks_per_family}) for the "
                             f"generated suite")
        return self


TASKSET_KINDS = ("sbm", "snap", "table", "python", "instructions")
TaskSetConfig = Annotated[SBMTaskSetConfig | SnapTaskSetConfig | TableTaskSetConfig
                          | PythonTaskSetConfig | InstructionsTaskSetConfig,
                          Field(discriminator="kind")]


class PropagatedLabelsConfig(_Strict):
    """Each task's training labels propagated over the graph as one more input column per
    task (personalised PageRank, Zhou et al., "Learning with Local and Global Consistency",
    NIPS 2004, eq. 4, via PyG's ``LabelPropagation``): p ← αÂp + (1 − α)y_train for
    ``iterations`` steps from p = y_train, then log(p + 1e-4), standardised. A training
    node's own label never reaches its own column: the training nodes are split into
    ``folds`` folds and a node of fold f reads the propagation of the other folds' labels;
    every other node reads the mean over folds. A task's regression and skip read its own
    column beside the shared features (README "Model options"). ``enabled``: None (the
    default) turns it on for graph task sets (``taskset.kind`` sbm or snap) and off for the
    others."""

    enabled: bool | None = None
    alpha: float = Field(0.85, gt=0, lt=1)
    iterations: int = Field(20, ge=1, le=200)
    folds: int = Field(5, ge=2, le=20)


class FeaturesConfig(_Strict):
    """Node features: FastRP structural embedding or a given .npy array, then SIGN; and,
    optionally, each task's propagated training labels (``propagated_labels``)."""

    kind: Literal["fastrp", "given"] = "fastrp"
    path: Path | None = None
    dim: int = Field(64, ge=2)
    hops: int = Field(4, ge=1, le=10)
    degree_exponent: float = -0.5
    sign_hops: int = Field(0, ge=0, le=6)
    propagated_labels: PropagatedLabelsConfig = PropagatedLabelsConfig()

    @model_validator(mode="after")
    def _path_for_given(self) -> FeaturesConfig:
        if self.kind == "given" and self.path is None:
            raise ValueError("features.path is required when features.kind is 'given'")
        return self


class ModelConfig(_Strict):
    """SIGN-MLP: an MLP trunk over propagated features, one logit head per task; ``skip``
    adds a per-task linear map from the input features to each head's logit (so the model
    contains one logistic regression per task); ``skip_init`` starts that skip at random
    (``random``) or at each task's logistic regression (``linear``; ``linear_fixed`` keeps the
    skip there and trains the rest; ignored without the skip).
    The defaults are measured (``scripts/bench_models.py``, README "Model options")."""

    hidden: list[Annotated[int, Field(ge=1)]] = [8, 8]
    dropout: float = Field(0.0, ge=0, lt=1)
    skip: bool = True
    skip_init: Literal["random", "linear", "linear_fixed"] = "linear"

    @property
    def linear_start(self) -> bool:
        """Whether models start from the per-task logistic regression (``skip_init: linear``
        or ``linear_fixed``, with the skip on): skip and head biases at its solution, the
        heads' trunk weights at zero (grouping.models.per_task_linear)."""
        return self.skip and self.skip_init != "random"


class LoRAConfig(_Strict):
    """LoRA adapters (Hu et al., ICLR 2022) through PEFT: rank, scale α, dropout and the
    module names they wrap."""

    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(["q_proj", "v_proj", "up_proj", "down_proj"],
                                      min_length=1)


class ArchitectureConfig(_Strict):
    """A small Llama-style causal LM built from this config (seeded) when no
    ``name_or_path`` is given: for tests and the generated suite."""

    hidden_size: int = Field(64, ge=8)
    intermediate_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> ArchitectureConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        return self


class LanguageModelConfig(_Strict):
    """The language model of instruction task sets, fine-tuned through LoRA only.

    ``name_or_path``: a Hugging Face causal LM (or, with ``seq2seq``, an encoder-decoder)
    read from a local folder, never downloaded; None builds ``architecture`` from the seed.
    ``tokenizer``: ``char`` (the built-in character tokenizer) or ``model`` (the one saved
    with ``name_or_path``). ``answer_logodds``: the output function is the log-odds of the
    gold answer's ``first`` token or the ``mean`` over its tokens.
    """

    name_or_path: Path | None = None
    seq2seq: bool = False
    architecture: ArchitectureConfig = ArchitectureConfig()
    tokenizer: Literal["char", "model"] = "char"
    lora: LoRAConfig = LoRAConfig()
    answer_logodds: Literal["first", "mean"] = "mean"
    max_length: int = Field(128, ge=8)

    @model_validator(mode="after")
    def _sources(self) -> LanguageModelConfig:
        if self.name_or_path is None and (self.seq2seq or self.tokenizer == "model"):
            raise ValueError("name_or_path is required for seq2seq models and for "
                             "tokenizer 'model'")
        return self


PositiveWeighting = Literal["none", "sqrt", "balanced"]


class TrainConfig(_Strict):
    """The training loop shared by base, group and single-task models (grouping.training):
    ``pos_weight`` up-weights each task's positives in the BCE by its training
    negative-to-positive ratio r (``sqrt``: √r, ``balanced``: r); ``early_stopping`` keeps
    the epoch of the lowest validation loss (``val_loss``) or of the highest mean per-task
    validation average precision (``val_ap``). Both apply to binary-label task sets; their
    defaults are measured (``scripts/bench_models.py``, README "Model options")."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(20, ge=1)
    pos_weight: PositiveWeighting = "sqrt"
    early_stopping: Literal["val_loss", "val_ap"] = "val_ap"


EstimatorName = Literal["surrogate", "calibrated_surrogate", "first_order", "label_overlap",
                        "lookahead", "task_curves", "truncated"]


class FirstOrderConfig(_Strict):
    """The first-order estimator (grouping.affinity.estimators.first_order): ``normalize``
    scores cosines of the tasks' loss gradients instead of inner products (LESS, Xia et al.
    2024), so that tasks with large gradients do not dominate a subset's direction."""

    normalize: bool = False


class CalibratedSurrogateConfig(_Strict):
    """The calibrated surrogate (grouping.affinity.estimators.calibrated_surrogate): the
    surrogate's λ picked from ``l2s`` so that its predicted change of the validation losses
    matches, in mean relative size, the change that truly training the first ``subsets`` of
    the sampled subsets (the truth's protocol, seeds of the estimator's own) makes."""

    subsets: int = Field(8, ge=1)
    l2s: list[float] = Field([1e-4, 1e-3, 1e-2, 1e-1, 1.0], min_length=1)

    @field_validator("l2s")
    @classmethod
    def _positive(cls, l2s: list[float]) -> list[float]:
        if any(l2 <= 0 for l2 in l2s):
            raise ValueError("every λ must be positive")
        return l2s


TruthTarget = Literal["loss", "ap"]
"""What the true f(S, i) records of a task on the validation rows (TrueAffinityConfig,
LookaheadConfig)."""


class LookaheadConfig(_Strict):
    """The lookahead estimator (grouping.affinity.estimators.lookahead): θ0 fine-tuned on each
    subset for ``epochs`` epochs at ``lr`` (null: the fine-tuning rate, true_affinity.lr or
    train.lr) in mini-batches of ``batch_size`` rows (null: train.batch_size), f̂ the mean
    over ``seeds`` such runs of each task's validation ``target`` (its loss, or 1 − its
    average precision, as ``true_affinity.target``); ``keep_best``: the checkpoint of the
    best validation criterion over S's tasks among epochs 0..epochs (``train.early_stopping``,
    the rule a group model stops by), not the last; ``patience``: with ``keep_best``, the
    fine-tuning stops once that many epochs in a row have not improved on the best (a group
    model's early stopping with a shorter patience; null: every one of the ``epochs``);
    ``stopping``: with ``keep_best``, where the kept epoch comes from: ``validation``, each
    epoch of S's own fine-tuning evaluated, or ``task_curves``, read off the tasks' own
    fine-tuning curves as the task-curves estimator reads it, S then fine-tuned for exactly
    that many epochs with no validation pass, or ``curve_screened``, the subsets whose curves
    keep epoch 0 keep θ0's figures untrained and the others are validated as with
    ``validation`` (both curve rules: binary-label task sets, no dropout); null (the
    default): ``curve_screened`` where it applies (``keep_best``, a binary-label task set, a
    model without dropout), ``validation`` elsewhere (README "Affinity estimators",
    hypothesis 21: the lookahead's ranking within its standard errors on the real sets at
    0.027 of the truth's cost on snap_amazon_sub, against 0.197)."""

    epochs: int = Field(8, ge=1)
    seeds: int = Field(1, ge=1)
    lr: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    target: TruthTarget = "loss"
    keep_best: bool = True
    patience: int | None = Field(None, ge=1)
    stopping: Literal["validation", "task_curves", "curve_screened"] | None = None


class TaskCurvesConfig(_Strict):
    """The task-curves estimator (grouping.affinity.estimators.task_curves): θ0 fine-tuned on
    each task alone for ``epochs`` epochs at ``lr`` (null: the fine-tuning rate) in
    mini-batches of ``batch_size`` rows (null: train.batch_size), each task's validation
    curve recorded; f̂(S, i) is task i's ``target`` at the epoch S's early stopping keeps
    when it reads the mean of S's curves (``train.early_stopping``; ``patience``: that many
    epochs in a row without improvement end it, null: none within ``epochs``)."""

    epochs: int = Field(8, ge=1)
    lr: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    target: TruthTarget = "loss"
    patience: int | None = Field(None, ge=1)


class TruncatedConfig(_Strict):
    """The truncated estimator (grouping.affinity.estimators.truncated): a fresh group model
    on each subset trained exactly as the from-scratch truth trains it (the comparison's
    first optimizer and learning rate, the linear start, early stopping), cut at ``epochs``
    epochs; f̂ each task's validation ``target`` at its kept checkpoint. ``patience``: its
    early stopping ends after that many epochs in a row without improvement instead of
    ``train.patience`` (null: ``train.patience``), so that the budget follows each subset's
    own training curve rather than a fixed count of epochs."""

    epochs: int = Field(15, ge=1)
    target: TruthTarget = "loss"
    patience: int | None = Field(None, ge=1)


class AffinityConfig(_Strict):
    """How f(S, i) is obtained on the sampled subsets before aggregation into T.

    ``gradtag``: Grad-TAG's estimate (projected output gradients, then ``estimator``);
    ``true``: really fine-tuning θ0 on every subset, the expensive method Grad-TAG
    approximates (for small task sets).

    ``estimator`` (grouping.affinity.estimators): ``surrogate``, Grad-TAG's logistic fit per
    subset on the gradient features with the base logit as offset (``l2``,
    ``newton_iterations``, ``tolerance``, ``surrogate_dtype``); ``calibrated_surrogate``,
    the same fit with λ matched to the size of the change a few truly trained subsets show
    (``calibrated_surrogate``); ``first_order``, the
    alignment of task i's validation loss gradient with the mean training loss gradient of
    S (``first_order``); ``label_overlap``, the overlap of the training positives of i with
    those of S's other tasks (binary-label task sets only; no model); ``lookahead``, task
    i's validation loss after a short real fine-tuning of θ0 on S (``lookahead``);
    ``task_curves``, task i's validation loss on its own fine-tuning curve at the epoch where
    S's early stopping, reading S's tasks' curves, stops (``task_curves``);
    ``truncated``, task i's validation loss after the truth's own training of a fresh model
    on S, cut short (``truncated``).

    Default ``lookahead`` with 8 epochs and ``keep_best``, chosen by measurement (README
    "Affinity estimators"): against θ0 fine-tuned for 10 epochs the lookahead ranks a task's
    subsets at 0.59-0.81 of the truth's noise floor on sbm_100 and the four real task sets,
    where the surrogate reaches −0.12-0.30; against a group model trained from scratch on S
    (the truth grouping needs) only the lookahead that keeps the checkpoint a group model
    keeps ranks them, and 8 epochs rank them better than 3 (0.92, 0.44 and 1.13 of the floor
    on snap_amazon_sub, yeast and cal500, against 0.85, 0.41 and 0.57), at 0.4 of the truth's
    seconds on snap_amazon_sub. ``truncated`` ranks yeast far better (1.05 of the floor) but
    its budget is absolute: 15 epochs leave the quickstart's slow planted model unranked. It
    trains θ0 once per subset, so on task sets of thousands of subsets on large graphs
    ``surrogate`` is the scalable choice. Since hypothesis 21 the lookahead first records
    each task's own fine-tuning curve and leaves untrained the subsets whose mean curve
    never improves on epoch 0 (``lookahead.stopping``): the same ranking within its standard
    errors at 0.027 of the truth's cost on snap_amazon_sub, against 0.197.

    ``projection`` of the output gradients (grouping.affinity.projectors): ``dense`` (a
    Gaussian block per parameter), ``kronecker`` (per linear layer P_out ⊗ P_in, never forming
    the per-example gradient; d_out·d_in ≤ projection_dim, the most balanced factors) or
    ``kronecker+dense`` (Kronecker to ``intermediate_dim``, then dense down to
    projection_dim).

    ``surrogate_dtype: float32`` runs the surrogate solver's passes over the rows in float32
    (about twice as fast; the gradient then stops near 1e-7 instead of ``tolerance``).
    """

    method: Literal["gradtag", "true"] = "gradtag"
    estimator: EstimatorName = "lookahead"
    first_order: FirstOrderConfig = FirstOrderConfig()
    calibrated_surrogate: CalibratedSurrogateConfig = CalibratedSurrogateConfig()
    lookahead: LookaheadConfig = LookaheadConfig()
    task_curves: TaskCurvesConfig = TaskCurvesConfig()
    truncated: TruncatedConfig = TruncatedConfig()
    projection: Literal["dense", "kronecker", "kronecker+dense"] = "dense"
    intermediate_dim: int = Field(2048, ge=4)
    projection_dim: int = Field(200, ge=1)
    subset_size: int = Field(10, ge=2)
    coverage: float = Field(10.0, gt=0)
    num_subsets: int | None = Field(None, ge=1)
    l2: float = Field(0.1, gt=0)
    max_negatives: int | None = Field(None, ge=1)
    newton_iterations: int = Field(50, ge=1)
    tolerance: float = Field(1e-8, gt=0)
    surrogate_dtype: Literal["float64", "float32"] = "float64"

    @field_validator("method", mode="before")
    @classmethod
    def _unquoted_true(cls, method: Any) -> Any:
        """``method: true`` unquoted is YAML's boolean; it means the method named "true"."""
        if method is True:
            return "true"
        if method is False:
            raise ValueError("expected 'gradtag' or 'true', found the boolean false")
        return method


class TrueAffinityConfig(_Strict):
    """The true f(S, i) on a sample of the estimator's subsets, for the error report.

    ``protocol``: ``fine_tune`` copies θ0 and fine-tunes it on S (``epochs`` fixed epochs, or
    early stopping when null, at ``lr``); ``from_scratch`` trains a fresh model on S exactly
    as a group model is trained (the ``train`` loop with its early stopping, the first of
    ``group_training.optimizers`` at its first learning rate; ``epochs`` and ``lr`` do not
    apply). Either way f(S, i) is task i's validation loss.

    ``all_subsets`` fine-tunes every subset instead of a sample: the true affinity matrix,
    its groups (a "true" comparison row) and the adjusted Rand index between the groups of
    the estimated and of the true matrix. ``repeat`` fine-tunes the sample a second time with
    another seed (the noise floor).

    ``target``: what f(S, i) records of task i on the validation rows, ``loss`` (its
    cross-entropy) or ``ap`` (1 − its average precision, 1 for a task without a validation
    positive; binary-label task sets only), the metric group models are stopped on
    (``train.early_stopping: val_ap``) and judged by.
    """

    enabled: bool = False
    protocol: Literal["fine_tune", "from_scratch"] = "fine_tune"
    target: TruthTarget = "loss"
    num_subsets: int = Field(30, ge=1)
    all_subsets: bool = False
    epochs: int | None = Field(10, ge=1)
    lr: float | None = Field(None, gt=0)
    repeat: bool = True


class ClusteringConfig(_Strict):
    """Clustering of the affinity matrix into groups.

    ``solver`` of the SDP: cvxpy with ``SCS`` or ``CLARABEL``, or ``LOWRANK`` (Burer–Monteiro
    with a nonnegative factor, grouping.clustering.lowrank); ``auto`` takes SCS up to 200
    tasks and LOWRANK above (SCS needs ≈ 16 s at 500 tasks and ≈ 2 min at 1000 on 2 cores).
    """

    method: Literal["sdp", "spectral"] = "sdp"
    num_groups: int | Literal["auto"] = "auto"
    max_groups: int = Field(20, ge=2)
    solver: Literal["auto", "SCS", "CLARABEL", "LOWRANK"] = "auto"


class GroupsConfig(_Strict):
    """Which groupings are trained and compared. ``per_task_linear``: one logistic
    regression per task on the same features (binary-label task sets only;
    grouping.evaluation.linear_baseline)."""

    single_task: bool = True
    per_task_linear: bool = True
    random_seeds: int = Field(3, ge=0)
    spectral: bool = True


OptimizerName = Literal["adam", "adatask_adam", "adatask_adam_mean", "adatask_rmsprop",
                        "adatask_adagrad"]


class GroupTrainingConfig(_Strict):
    """Per-group training as Ray Tune trials (one trial per group, optimizer and lr).

    ``optimizers[0]`` trains the groups whose rows lead the comparison; the others are
    trained beside it on the same groups for the Adam-vs-AdaTask comparison. Every grouping
    is trained with ``seeds`` initialisation seeds (``seed``, ``seed + 1``, ...; the j-th
    random grouping with the j-th of them), and a row is the mean over them. The task
    dominance of the all-in-one and Grad-TAG models is tracked on models of at most
    ``dominance_max_tasks`` tasks (null: every model): it takes every task's gradient of the
    trunk at every step, about one more backward pass per task.

    ``lrs``: the learning rates searched (the best validation criterion is kept), one list
    for every optimizer, or a mapping from each optimizer to its own list, so that no
    optimizer is judged at a rate tuned for another.

    Defaults chosen by measurement (README "AdaTask against Adam"): Adam leads, and
    AdaTask-Adam with the mean of the task steps is trained beside it at 3e-3 (the rate its
    all-in-one models chose on sbm_100 and snap_amazon_sub); the paper's summed AdaTask-Adam
    lost to Adam's all-in-one model on sbm_100, cal500 and snap_amazon_sub.
    """

    optimizers: list[OptimizerName] = Field(["adam", "adatask_adam_mean"], min_length=1)
    lrs: (list[Annotated[float, Field(gt=0)]]
          | dict[OptimizerName, Annotated[list[Annotated[float, Field(gt=0)]],
                                          Field(min_length=1)]]) = Field(
        {"adam": [1e-3], "adatask_adam": [1e-3], "adatask_adam_mean": [3e-3],
         "adatask_rmsprop": [1e-3], "adatask_adagrad": [1e-3]}, min_length=1)
    seeds: int = Field(3, ge=1)
    dominance_decay: float = Field(0.9, gt=0, lt=1)
    dominance_max_tasks: int | None = Field(100, ge=1)
    num_cpus_per_trial: float = Field(1.0, gt=0)
    num_gpus_per_trial: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _rates_for_every_optimizer(self) -> GroupTrainingConfig:
        if isinstance(self.lrs, dict):
            missing = [name for name in self.optimizers if name not in self.lrs]
            if missing:
                raise ValueError(f"lrs: no learning rates for the optimizer {missing[0]!r}")
        return self

    def lrs_for(self, optimizer: str) -> list[float]:
        """The learning rates searched for ``optimizer``."""
        return list(self.lrs[optimizer] if isinstance(self.lrs, dict) else self.lrs)

    @property
    def first_lr(self) -> float:
        """The first learning rate of the first optimizer (the from-scratch truth's)."""
        return self.lrs_for(self.optimizers[0])[0]


class DMTGConfig(_Strict):
    """DMTG one-shot grouping (Gao et al., ICML 2024): K trunks, K·N heads, Gumbel-softmax
    task-to-branch logits trained jointly with the model. ``warmup_epochs`` train the
    branches with uniform task weights before the logits start learning, and the temperature
    anneals from ``temperature`` to ``final_temperature``; ``warmup_epochs: 0`` with a
    constant temperature is the paper's plain one-shot schedule, which on the planted SBMs
    locks the logits in before the branches differ (groups near random)."""

    enabled: bool = True
    num_groups: int | None = Field(None, ge=1)
    temperature: float = Field(4.0, gt=0)
    final_temperature: float | None = Field(0.5, gt=0)
    logits_lr: float = Field(0.01, gt=0)
    warmup_epochs: int = Field(10, ge=0)
    max_epochs: int | None = Field(None, ge=1)
    max_memory_gib: float = Field(8.0, gt=0)
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)


class RayConfig(_Strict):
    """Ray resources: workers per fan-out stage and each worker's share of a node. Gradient
    workers with ``num_gpus_per_worker`` > 0 compute on their GPU; ``num_gpus_per_surrogate``
    > 0 solves the surrogate batches on that share of a GPU.
    ``subsets_per_batch`` subsets go to a worker at once: the more of them share a task, the
    fewer times its rows are read (see :mod:`grouping.affinity.surrogate`); estimators whose
    subsets do not depend on their batch-mates take fewer, so that every worker gets several
    batches (:func:`workers.estimates.estimate_batch_size`).
    ``worker_memory_gib`` is the memory one worker may use, against which the estimation
    stages' needs are checked before a run starts (:mod:`grouping.resources`); null: the
    memory available on the driver's machine, shared by ``num_workers``."""

    address: str | None = None
    num_workers: int = Field(2, ge=1)
    num_cpus_per_worker: float = Field(1.0, gt=0)
    num_gpus_per_worker: float = Field(0.0, ge=0)
    num_gpus_per_surrogate: float = Field(0.0, ge=0)
    chunk_rows: int = Field(2048, ge=1)
    subsets_per_batch: int = Field(64, ge=1)
    max_retries: int = Field(3, ge=0)
    worker_memory_gib: float | None = Field(None, gt=0)


class RunConfig(_Strict):
    """One pipeline run."""

    name: str = Field("run", min_length=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    taskset: TaskSetConfig
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    language_model: LanguageModelConfig = LanguageModelConfig()
    train: TrainConfig = TrainConfig()
    affinity: AffinityConfig = AffinityConfig()
    true_affinity: TrueAffinityConfig = TrueAffinityConfig()
    clustering: ClusteringConfig = ClusteringConfig()
    groups: GroupsConfig = GroupsConfig()
    group_training: GroupTrainingConfig = GroupTrainingConfig()
    dmtg: DMTGConfig = DMTGConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _combinations(self) -> RunConfig:
        num_tasks = self.taskset.num_tasks
        if self.affinity.subset_size >= num_tasks:
            raise ValueError(
                f"affinity.subset_size ({self.affinity.subset_size}) must be below the number "
                f"of tasks ({num_tasks})"
            )
        if self.affinity.method == "true" and self.true_affinity.enabled:
            raise ValueError("true_affinity.enabled: the error report compares Grad-TAG's "
                             "estimate with true fine-tuning; affinity.method 'true' has no "
                             "estimate to compare")
        binary_only = self.train.model_fields_set & {"pos_weight", "early_stopping"}
        if isinstance(self.taskset, InstructionsTaskSetConfig) and binary_only:
            field = sorted(binary_only)[0]
            raise ValueError(f"train.{field}: applies to binary-label task sets; an "
                             "instructions task set trains on the answer's loss and stops on "
                             "its validation loss (remove the field)")
        for field, target in (("true_affinity.target", self.true_affinity.target),
                              ("affinity.lookahead.target", self.affinity.lookahead.target),
                              ("affinity.task_curves.target",
                               self.affinity.task_curves.target),
                              ("affinity.truncated.target", self.affinity.truncated.target)):
            if isinstance(self.taskset, InstructionsTaskSetConfig) and target == "ap":
                raise ValueError(f"{field}: 'ap' applies to binary-label task sets; an "
                                 "instructions task set's truth is its answer loss (use 'loss')")
        lookahead = self.affinity.lookahead
        if self.affinity.estimator == "lookahead" and lookahead.stopping not in (
                None, "validation"):
            rule = lookahead.stopping
            if not lookahead.keep_best:
                raise ValueError(f"affinity.lookahead.stopping: {rule} picks the epoch kept, "
                                 "so it needs affinity.lookahead.keep_best: true")
            if isinstance(self.taskset, InstructionsTaskSetConfig):
                raise ValueError(f"affinity.lookahead.stopping: {rule} applies to "
                                 "binary-label task sets (use 'validation')")
            if self.model.dropout > 0:
                raise ValueError(f"affinity.lookahead.stopping: {rule} trains side by side, "
                                 "which draws no dropout masks; set model.dropout: 0")
        if self.affinity.estimator == "task_curves" and self.model.dropout > 0:
            raise ValueError("affinity.estimator: task_curves trains its copies side by side, "
                             "which draws no dropout masks; set model.dropout: 0 or pick "
                             "another estimator")
        graph = isinstance(self.taskset, SBMTaskSetConfig | SnapTaskSetConfig)
        if self.features.propagated_labels.enabled and not graph:
            raise ValueError("features.propagated_labels.enabled: applies to graph task sets "
                             "(taskset.kind sbm or snap); this task set has no graph")
        if isinstance(self.taskset, InstructionsTaskSetConfig) and self.dmtg.enabled:
            raise ValueError("dmtg.enabled: DMTG branches a SIGN-MLP trunk; it is not "
                             "available for instructions task sets (set dmtg.enabled: false)")
        k = self.clustering.num_groups
        if k != "auto" and not 1 <= k <= num_tasks:
            raise ValueError(f"clustering.num_groups ({k}) must be between 1 and the number "
                             f"of tasks ({num_tasks})")
        return self

    def fine_tuning(self) -> TrainConfig:
        """The training settings of true fine-tuning: ``train`` with true_affinity's lr."""
        return self.train.model_copy(update={"lr": self.true_affinity.lr or self.train.lr})

    def digest(self, *sections: str) -> str:
        """Hash of the named top-level sections (all when none), for the stage cache."""
        data = self.model_dump(mode="json")
        picked = {key: data[key] for key in (sections or tuple(sorted(data)))}
        text = json.dumps(picked, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _format_error(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"] if str(part) not in TASKSET_KINDS)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{location or 'config'}: {message}"


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML (safely: a
    ``!!python`` tag is refused, never executed)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value")
    path, raw = assignment.split("=", 1)
    keys = path.strip().split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {path}: {key} is not a section")
        node = child
    try:
        node[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(f"--set {path}: the value {raw!r} is not valid YAML "
                          f"({' '.join(str(problem).split())})") from None


def _check_file(field: str, path: Path) -> None:
    """``path`` must be an existing file (not a folder)."""
    if path.is_dir():
        raise ConfigError(f"{field}: {path} is a directory, expected a file")
    if not path.is_file():
        raise ConfigError(f"{field}: file not found: {path}")


def _check_files(config: RunConfig) -> None:
    paths = []
    if isinstance(config.taskset, SnapTaskSetConfig):
        paths += [("taskset.edges", config.taskset.edges),
                  ("taskset.communities", config.taskset.communities)]
    if isinstance(config.taskset, TableTaskSetConfig):
        paths.append(("taskset.path", config.taskset.path))
    instructions = config.taskset if isinstance(config.taskset, InstructionsTaskSetConfig) else None
    if instructions is not None and instructions.path and not instructions.path.exists():
        raise ConfigError(f"taskset.path: not found: {instructions.path}")
    model_path = config.language_model.name_or_path
    if model_path is not None and not model_path.is_dir():
        raise ConfigError(f"language_model.name_or_path: not a local model folder: "
                          f"{model_path}")
    if config.features.path is not None:
        if not isinstance(config.taskset, SBMTaskSetConfig | SnapTaskSetConfig):
            raise ConfigError(f"features.path: the features section applies to graph task "
                              f"sets; a {config.taskset.kind} task set brings its own features")
        paths.append(("features.path", config.features.path))
    for field, path in paths:
        _check_file(field, path)


def parse_config(data: Any, overrides: list[str] = (), source: str = "config") -> RunConfig:
    """Validate a config mapping (after applying ``--set`` overrides); ``source`` names it in
    the message when it is not a mapping."""
    if not isinstance(data, dict):
        found = "nothing" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{source}: expected a mapping of config sections at the top level, "
                          f"found {found}")
    data = json.loads(json.dumps(data, default=str))
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_error(error)) from None
    _check_files(config)
    return config


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read, override and validate a YAML config file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) YAML file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML") from None
    return parse_config(data, overrides, str(path))


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
