"""Where Ray workers go: what each asks the cluster for (`bot.engine.ray_executor.placement`)."""

from __future__ import annotations

from bot.engine.ray_executor import placement


def test_cpu_workers_on_a_machine_with_a_gpu_ask_for_no_gpu() -> None:
    """`bench/scale.py` runs two CPU workers: on a one-GPU machine, asking for a GPU each left
    the second waiting forever."""
    place = placement("cpu", gpus=1, workers=2, cpu_threads=1, cores=16)
    assert (place.count, place.gpu, place.threads) == (2, False, 1)
    assert place.resources == {"num_gpus": 0, "num_cpus": 1}


def test_cpu_workers_split_the_cores_left_to_them() -> None:
    place = placement("cpu", gpus=4, workers=3, cpu_threads=None, cores=16)
    assert (place.count, place.threads, place.resources["num_gpus"]) == (3, 5, 0)


def test_gpu_workers_take_a_gpu_each_one_per_gpu_by_default() -> None:
    place = placement("auto", gpus=2, workers=None, cpu_threads=None, cores=16)
    assert (place.count, place.gpu, place.threads) == (2, True, None)
    assert place.resources == {"num_gpus": 1, "num_cpus": 1}
    assert placement("cuda", gpus=1, workers=3, cpu_threads=None, cores=8).count == 3


def test_a_cluster_without_gpus_gets_one_cpu_worker() -> None:
    place = placement("auto", gpus=0, workers=None, cpu_threads=None, cores=2)
    assert (place.count, place.gpu, place.threads) == (1, False, 1)
