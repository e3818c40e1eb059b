"""Instruction task sets, the LoRA language model, its output function and gradients, and a
pipeline run over them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from grouping.affinity.computers import GradientComputer
from grouping.affinity.lm_outputs import lm_output_gradients
from grouping.affinity.projection import dense_projection
from grouping.artifacts import RunDirectory
from grouping.config import ConfigError, InstructionsTaskSetConfig, TrainConfig, parse_config
from grouping.families import InstructionFamily
from grouping.lm_training import encode_for, evaluate_examples, train_lm
from grouping.models import restore, spec_from_dict, spec_to_dict
from grouping.models.char_tokenizer import CharTokenizer
from grouping.models.lm_outputs import answer_logodds, token_logodds
from grouping.models.lora_lm import LMSpec, adapter_state, build_lm
from grouping.tasksets import TEST, TRAIN, VAL, build_taskset
from grouping.tasksets.instruction_suite import SKILLS, generate_suite
from workers.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
TINY_LM = {"architecture": {"hidden_size": 16, "intermediate_size": 32, "num_layers": 1,
                            "num_heads": 2},
           "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
           "max_length": 64}


def _config(taskset: dict, **sections) -> dict:
    config = {"name": "instructions", "seed": 3, "device": "cpu", "taskset": taskset,
              "language_model": TINY_LM,
              "train": {"lr": 0.01, "batch_size": 16, "max_epochs": 3, "patience": 2},
              "affinity": {"projection_dim": 32, "subset_size": 3, "num_subsets": 12},
              "clustering": {"num_groups": 2},
              "groups": {"single_task": False, "random_seeds": 1, "spectral": False},
              "group_training": {"optimizers": ["adam"], "lrs": [0.01]},
              "dmtg": {"enabled": False}, "ray": {"num_workers": 2, "chunk_rows": 64}}
    config.update(sections)
    return config


def _suite(**options) -> dict:
    return {"kind": "instructions", "num_families": 2, "tasks_per_family": 3,
            "num_tasks": 6, "examples_per_task": 16, **options}


def _jsonl_config(path: Path, **taskset) -> dict:
    return _config({"kind": "instructions", "source": "jsonl", "path": str(path),
                    "num_tasks": 3, **taskset},
                   affinity={"projection_dim": 8, "subset_size": 2, "num_subsets": 3})


def _spec(**changes) -> LMSpec:
    config = parse_config(_config(_suite(), language_model={**TINY_LM, **changes}))
    return LMSpec.from_config(config.language_model)


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def test_jsonl_one_file_per_task_and_a_task_field(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name, count in (("task_a", 8), ("task_b", 6), ("task_c", 3), ("task_d", 7)):
        _write_jsonl(folder / f"{name}.jsonl", [
            {"definition": f"Do {name}.", "input": f"x{i}", "output": [f"y{i}", "alt"]}
            for i in range(count)])
    taskset = build_taskset(parse_config(_jsonl_config(folder)))
    assert taskset.task_names == ["task_a", "task_b", "task_d"]
    assert np.bincount(taskset.task).tolist() == [8, 6, 7]
    first = taskset.prompts.index("Do task_a.\nInput: x3\nOutput: ")
    assert taskset.answers[first] == "y3" and taskset.task[first] == 0
    assert set(np.unique(taskset.split)) <= {TRAIN, VAL, TEST}

    single = tmp_path / "all.jsonl"
    _write_jsonl(single, [{"name": f"t{i % 3}", "instruction": "Copy.", "text": str(i),
                           "target": str(i), "part": "train" if i < 6 else "dev"}
                          for i in range(12)])
    fields = {"task": "name", "instruction": "instruction", "input": "text",
              "output": "target", "split": "part"}
    taskset = build_taskset(parse_config(_jsonl_config(single, fields=fields)))
    assert taskset.task_names == ["t0", "t1", "t2"]
    assert taskset.task.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert taskset.split.tolist() == [TRAIN, TRAIN, VAL, VAL] * 3


@pytest.mark.parametrize(("line", "message"), [
    ('{"definition": "a", "input": "b"', "not valid JSON"),
    ('["not", "an", "object"]', "expected a JSON object"),
    ('{"definition": "a", "input": "b", "output": 3}', "field 'output' must be a string"),
    ('{"definition": "a", "input": "b", "output": "c", "split": "later"}', "field 'split'"),
])
def test_malformed_jsonl_names_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"definition": "a", "input": "b", "output": "c"}\n\n' + line + "\n")
    config = parse_config(_jsonl_config(path))
    with pytest.raises(ConfigError, match=rf"^{path} line 3: .*{message}"):
        build_taskset(config)


def test_driver_exits_2_naming_the_file_and_line_of_malformed_jsonl(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"task": "a", "definition": "d", "input": "i", "output": "o"}\n{oops\n')
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(_jsonl_config(path)))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_grouping.py"),
                             "--config", str(config), "--output", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {path} line 2: not valid JSON")
    assert "Traceback" not in result.stderr


def test_instruction_config_mistakes_name_their_field(tmp_path):
    with pytest.raises(ConfigError, match=r"^config: dmtg\.enabled: DMTG branches"):
        parse_config(_config(_suite(), dmtg={"enabled": True}))
    with pytest.raises(ConfigError, match=r"^config: true_affinity\.target: 'ap' applies to "
                                          r"binary-label task sets"):
        parse_config(_config(_suite(), true_affinity={"target": "ap"}))
    with pytest.raises(ConfigError, match=r"^config: affinity\.lookahead\.target: 'ap' "):
        parse_config(_config(_suite(), affinity={"subset_size": 3,
                                                 "lookahead": {"target": "ap"}}))
    with pytest.raises(ConfigError, match=r"^language_model\.name_or_path: not a local model "):
        parse_config(_config(_suite(), language_model={"name_or_path": str(tmp_path / "no")}))
    with pytest.raises(ConfigError, match=r"^taskset: num_tasks must equal"):
        parse_config(_config({**_suite(), "num_tasks": 7}))
    with pytest.raises(ConfigError, match=r"^taskset: path is required"):
        parse_config(_config({"kind": "instructions", "source": "jsonl"}))
    with pytest.raises(ConfigError, match=r"^config: train\.early_stopping: applies to "
                                          r"binary-label task sets"):
        parse_config(_config(_suite(), train={"early_stopping": "val_ap"}))


def test_generated_suite_is_deterministic_with_planted_families():
    options = InstructionsTaskSetConfig(kind="instructions")
    first, again, other = (generate_suite(options, seed) for seed in (0, 0, 1))
    assert first.num_tasks == 50 and first.task_names == again.task_names
    assert first.prompts == again.prompts and first.answers == again.answers
    assert np.array_equal(first.split, again.split)
    assert first.prompts != other.prompts
    assert first.families.tolist() == np.repeat(np.arange(10), 5).tolist()
    assert np.bincount(first.task).tolist() == [40] * 50
    for example in range(first.num_examples):
        skill = SKILLS[first.families[first.task[example]]]
        text = first.prompts[example].split("Input: ")[1].removesuffix("\nOutput: ")
        assert first.answers[example] == skill.answer(text)


def test_answer_noise_leaves_the_test_split_clean():
    noisy = generate_suite(InstructionsTaskSetConfig(kind="instructions", answer_noise=0.3), 0)
    changed = np.zeros(noisy.num_examples, bool)
    for example in range(noisy.num_examples):
        skill = SKILLS[noisy.families[noisy.task[example]]]
        text = noisy.prompts[example].split("Input: ")[1].removesuffix("\nOutput: ")
        changed[example] = noisy.answers[example] != skill.answer(text)
    assert not changed[noisy.split == TEST].any()
    assert 0.15 < changed[noisy.split != TEST].mean() < 0.35


def test_causal_encoding_marks_answer_positions():
    taskset = generate_suite(InstructionsTaskSetConfig(**_suite()), 0)
    chars = CharTokenizer()
    for mode in ("first", "mean"):
        spec = _spec(answer_logodds=mode)
        encoded = encode_for(build_lm(spec, 0), taskset, spec)
        for example in (0, 17, 40):
            answer = chars.encode(taskset.answers[example]) + [chars.eos_id]
            mask = encoded.answer_mask[example].bool()
            assert encoded.targets[example][mask].tolist() == answer
            weights = encoded.logodds_weight[example]
            assert torch.isclose(weights.sum(), torch.tensor(1.0))
            positions = torch.nonzero(mask)[:, 0]
            if mode == "first":
                assert weights[positions[0]] == 1
            else:
                assert torch.allclose(weights[positions[:-1]],
                                      torch.tensor(1 / (len(answer) - 1)))


def test_token_logodds_is_log_p_over_one_minus_p():
    logits = torch.randn(3, 5, 11, dtype=torch.float64)
    targets = torch.randint(0, 11, (3, 5))
    p = logits.softmax(-1).gather(-1, targets[..., None])[..., 0]
    assert torch.allclose(token_logodds(logits, targets), torch.log(p) - torch.log1p(-p))


def test_gradients_cover_lora_parameters_only_and_match_a_per_example_loop():
    taskset = generate_suite(InstructionsTaskSetConfig(**_suite()), 0)
    spec = _spec()
    model = build_lm(spec, 0)
    with torch.no_grad():  # a nonzero B so that the gradients of the A matrices are nonzero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    computer = GradientComputer(spec, adapter_state(model), taskset, 24, seed=5)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert set(computer.projection) == trainable
    assert trainable and all("lora_" in name for name in trainable)
    assert len(trainable) < len(list(model.parameters()))

    rows = np.array([0, 5, 33, 70])
    f0, projected = computer(rows, taskset.task[rows])
    batch = computer.outputs.encoded.rows(rows)
    params = [param for param in computer.model.parameters() if param.requires_grad]
    names = [name for name, param in computer.model.named_parameters() if param.requires_grad]
    for position, row in enumerate(rows):
        single = computer.outputs.encoded.rows([row])
        output = answer_logodds(computer.model, single)[0]
        grads = torch.autograd.grad(output, params)
        expected = sum(grad.flatten() @ computer.projection[name]
                       for name, grad in zip(names, grads))
        assert np.isclose(f0[position], float(output), atol=1e-5)
        assert np.allclose(projected[position], expected.detach().numpy(), atol=1e-4)
    again = lm_output_gradients(computer.model, computer.projection, batch)
    assert np.array_equal(again[1].numpy(), projected)


def test_instruction_rows_hold_each_tasks_own_examples():
    taskset = generate_suite(InstructionsTaskSetConfig(**_suite()), 0)
    rows = InstructionFamily().rows(taskset, max_negatives=1, seed=0)
    assert (rows.label == 1).all() and (rows.weight == 1).all()
    assert np.array_equal(taskset.task[rows.example], rows.task)
    for task in range(taskset.num_tasks):
        for split in (TRAIN, VAL):
            index = rows.rows_of(np.array([task]), split)
            assert np.array_equal(rows.example[index], taskset.examples_of([task], split))


def test_exact_match_by_teacher_forcing_equals_greedy_decoding():
    taskset = generate_suite(InstructionsTaskSetConfig(**_suite(
        num_families=10, tasks_per_family=1, num_tasks=10, examples_per_task=80)), 0)
    spec = _spec(architecture={"hidden_size": 32, "intermediate_size": 64, "num_layers": 1,
                               "num_heads": 2})
    model = build_lm(spec, 0)
    encoded = encode_for(model, taskset, spec)
    greater = np.array([9])  # "is the first digit greater?": yes / no, learnable quickly
    train_lm(model, taskset, encoded, greater, TrainConfig(lr=0.02, batch_size=16,
                                                           max_epochs=15, patience=15), 0, CPU)
    examples = taskset.examples_of(greater, TEST)
    exact = evaluate_examples(model, encoded, examples, CPU)["exact"]
    chars = CharTokenizer()
    greedy = []
    for example in examples:
        ids = [chars.bos_id] + chars.encode(taskset.prompts[example])
        produced = []
        with torch.no_grad():
            while len(produced) <= len(taskset.answers[example]):
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
                produced.append(int(logits.argmax()))
                ids.append(produced[-1])
        greedy.append(produced == chars.encode(taskset.answers[example]) + [chars.eos_id])
    assert exact.tolist() == greedy
    assert 0 < np.mean(exact) < 1


def test_models_load_from_a_local_folder_causal_and_seq2seq(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    vocab = CharTokenizer().vocab_size
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=2)).save_pretrained(tmp_path / "causal")
    T5ForConditionalGeneration(T5Config(vocab_size=vocab, d_model=16, d_kv=8, d_ff=32,
                                        num_layers=1, num_heads=2, decoder_start_token_id=0,
                                        pad_token_id=0, eos_token_id=2)
                               ).save_pretrained(tmp_path / "seq2seq")
    taskset = generate_suite(InstructionsTaskSetConfig(**_suite()), 0)
    for folder, seq2seq, modules in (("causal", False, ["q_proj"]), ("seq2seq", True, ["q"])):
        config = parse_config(_config(_suite(), language_model={
            "name_or_path": str(tmp_path / folder), "seq2seq": seq2seq,
            "lora": {"r": 2, "target_modules": modules}}))
        spec = LMSpec.from_config(config.language_model)
        model = build_lm(spec, 0)
        state = adapter_state(model)
        assert state and all("lora_" in name for name in state)
        restored = restore(spec_from_dict(spec_to_dict(spec)), state)
        computer = GradientComputer(spec, adapter_state(restored), taskset, 8, seed=0)
        f0, projected = computer(np.arange(4), taskset.task[:4])
        assert projected.shape == (4, 8) and np.isfinite(f0).all()
        encoded = encode_for(model, taskset, spec)
        assert (encoded.decoder_input_ids is not None) == seq2seq
        example = int(np.argmin(encoded.attention_mask.sum(1)))  # the most padded one
        padded = encoded.rows([example])
        length = int(padded["attention_mask"].sum())
        trimmed = {**padded, "input_ids": padded["input_ids"][:, :length],
                   "attention_mask": padded["attention_mask"][:, :length]}
        if not seq2seq:
            trimmed = {key: value[:, :length] for key, value in padded.items()}
        with torch.no_grad():
            assert torch.allclose(answer_logodds(model, padded), answer_logodds(model, trimmed),
                                  atol=1e-5)


def test_projection_blocks_do_not_depend_on_the_frozen_backbone():
    spec = _spec()
    shapes = {name: param.shape for name, param in build_lm(spec, 0).named_parameters()
              if param.requires_grad}
    other = {name: param.shape for name, param in build_lm(spec, 9).named_parameters()
             if param.requires_grad}
    assert shapes == other
    first, second = dense_projection(shapes, 8, 1), dense_projection(other, 8, 1)
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_instruction_tasks_run_through_the_pipeline(ray_session, tmp_path):
    config = parse_config(_config(_suite(), true_affinity={
        "enabled": True, "num_subsets": 4, "epochs": 2, "repeat": True}))
    run = RunDirectory(tmp_path / "run", resume=False)
    Pipeline(config, run, resume=False).execute()
    groups = json.loads(run.file("groups.json").read_text())
    assert sorted(task for group in groups["groups"] for task in group) == list(range(6))
    assert "ari_planted" in groups
    rows = json.loads(run.file("comparison.json").read_text())
    assert {row["grouping"] for row in rows} == {"all", "gradtag", "random"}
    for row in rows:
        assert row["metric"] == "test_exact_match"
        assert 0 <= row["worst_test_exact_match"] <= row["mean_test_exact_match"] <= 1
        assert 0 <= row["mean_test_token_accuracy"] <= 1
    saved = torch.load(run.file("base_model.pt"), weights_only=True)
    assert all("lora_" in name for name in saved["state"])
    report = run.file("report.md").read_text()
    assert "exact match" in report and "Estimated vs true affinity" in report
    errors = json.loads(run.file("error_report.json").read_text())
    assert errors["num_pairs"] == 4 * 3 and np.isfinite(errors["relative_distance"])
    assert errors["linearization_error"] == [] and errors["flops"]["ratio"] > 0
