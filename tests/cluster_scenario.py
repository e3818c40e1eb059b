"""A run on a simulated multi-node Ray cluster (ray.cluster_utils.Cluster), with its run
directory at a file:// URI, undisturbed and with worker nodes removed during the gradient and
the surrogate stages; also checks that GPU workers get CUDA_VISIBLE_DEVICES from logical GPU
resources. Run by tests/test_cluster.py in a subprocess (it starts its own Ray cluster):

    python tests/cluster_scenario.py OUTPUT_DIR   → OUTPUT_DIR/outcome.json
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import ray
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import small_sbm_config  # noqa: E402

from grouping.artifacts import RunDirectory  # noqa: E402
from grouping.config import parse_config  # noqa: E402
from workers.pipeline import Pipeline  # noqa: E402

CONFIG = small_sbm_config(
    ray={"num_workers": 3, "chunk_rows": 256, "subsets_per_batch": 2, "max_retries": 3},
    groups={"single_task": False, "random_seeds": 0, "spectral": False},
    group_training={"optimizers": ["adam"]})


def _run(uri: str) -> None:
    Pipeline(parse_config(CONFIG), RunDirectory(uri, resume=False), resume=False).execute()


def _finished_stages(run: Path) -> set[str]:
    manifest = run / "manifest.json"
    return set(json.loads(manifest.read_text())["stages"]) if manifest.is_file() else set()


def _remove_node_during(cluster: Cluster, cpu_nodes: list, run: Path, after: str, stage: str,
                        runner: threading.Thread) -> dict:
    """Once stage ``after`` has finished and every worker CPU is busy (the next stage, here
    ``stage``, holds all three), remove a worker node and add a fresh one."""
    while runner.is_alive():
        if after in _finished_stages(run) and ray.available_resources().get("CPU", 0) == 0:
            victim = cpu_nodes.pop(0)
            cluster.remove_node(victim, allow_graceful=False)
            cpu_nodes.append(cluster.add_node(num_cpus=1))
            return {"stage": stage, "removed_node": victim.node_id,
                    "stage_finished_before": stage in _finished_stages(run)}
        time.sleep(0.1)
    return {"stage": stage, "removed_node": None}


@ray.remote(num_gpus=0.5, num_cpus=0)
class GPUProbe:
    def visible_devices(self) -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def main(output: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cpu_nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.add_node(num_cpus=0, num_gpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    outcome: dict = {}

    probe = GPUProbe.remote()
    outcome["cuda_visible_devices"] = ray.get(probe.visible_devices.remote())
    ray.kill(probe)

    start = time.perf_counter()
    _run((output / "calm").as_uri())
    outcome["calm_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    disturbed = output / "disturbed"
    runner = threading.Thread(target=_run, args=(disturbed.as_uri(),))
    runner.start()
    outcome["faults"] = [
        _remove_node_during(cluster, cpu_nodes, disturbed, "base", "gradients", runner),
        _remove_node_during(cluster, cpu_nodes, disturbed, "gradients", "estimates", runner)]
    runner.join()
    outcome["disturbed_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    before = json.loads((output / "calm" / "manifest.json").read_text())["stages"]
    Pipeline(parse_config(CONFIG), RunDirectory((output / "calm").as_uri(), resume=True),
             resume=True).execute()
    after = json.loads((output / "calm" / "manifest.json").read_text())["stages"]
    outcome["resume_seconds"] = time.perf_counter() - start
    outcome["resume_reran"] = [stage for stage in after if after[stage] != before.get(stage)]

    calm, disturbed = (np.load(output / name / "affinity.npy") for name in ("calm", "disturbed"))
    outcome["affinity_identical"] = bool(np.array_equal(calm, disturbed))
    outcome["files_at_uri"] = sorted(path.name for path in (output / "disturbed").iterdir())
    (output / "outcome.json").write_text(json.dumps(outcome, indent=2))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
