"""DDP under torchrun (methods/distributed.py) and its first user, the ``pretrain`` stage: the global batch splits
over the ranks so that the schedule is the single-process one, ``runtime`` selects the layout (and is no DVC
dependency), rank 0 alone writes, and a rank that dies fails the stage without leaving outputs.

The slow tests run the real ``bench pretrain`` with ``runtime.nproc_per_node: 2`` on CPU: it re-launches itself
under ``torch.distributed.run`` (gloo, two ranks)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from bench.config.loader import ParamsError, dump_params, render_profile, validate_params
from methods import distributed as D

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(sys.executable).parent / "bench"


# ------------------------------------------------------------------------------------------------ units
def test_a_global_batch_splits_evenly_and_the_slices_rebuild_it():
    assert D.per_rank_batch(8, 1) == 8 and D.per_rank_batch(8, 2) == 4
    with pytest.raises(ValueError, match=r"batch size 7 does not split over 2 processes.*runtime.nproc_per_node"):
        D.per_rank_batch(7, 2)
    batch = list(range(10, 18))
    parts = [D.rank_slice(batch, D.World(rank=r, size=4)) for r in range(4)]
    assert [len(p) for p in parts] == [2, 2, 2, 2] and sum(parts, []) == batch


@pytest.mark.parametrize("n,size", [(10, 3), (2, 4), (0, 2), (8, 1)])
def test_inference_shards_cover_every_item_once_in_order(n, size):
    shards = [D.shard(n, D.World(rank=r, size=size)) for r in range(size)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_epoch_samplers_of_the_ranks_partition_a_permutation_reseeded_per_epoch():
    data = list(range(12))
    samplers = [D.epoch_sampler(data, seed=3, world=D.World(rank=r, size=2)) for r in range(2)]
    epochs = []
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        parts = [list(s) for s in samplers]
        assert sorted(parts[0] + parts[1]) == data and len(parts[0]) == len(parts[1]) == 6
        epochs.append(parts)
    assert epochs[0] != epochs[1]
    again = D.epoch_sampler(data, seed=3, world=D.World(rank=0, size=2))
    again.set_epoch(1)
    assert list(again) == epochs[1][0]


def test_one_process_is_left_alone():
    assert not D.launched_by_torchrun({"RANK": "0"})
    world = D.current()
    assert world == D.World() and world.is_main and D.is_main()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert D.wrap_model(model) is model and D.convert_sync_batchnorm(model) is model and D.unwrap(model) is model
    D.barrier()  # nothing to wait for
    assert D.mean_across_ranks(torch.tensor(2.5)).item() == 2.5
    with D.written_by_main(lambda: _yielding("tmp")) as out:
        assert out == "tmp"


def _yielding(value):
    import contextlib

    @contextlib.contextmanager
    def cm():
        yield value
    return cm()


def test_the_cpu_sync_batchnorm_keeps_the_layers_state_and_outputs_outside_a_job():
    from timm.layers import BatchNormAct2d  # timm's norm + activation layer (regnet, hrnet)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), BatchNormAct2d(8), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))
    model.train()(torch.randn(4, 3, 12, 12))  # running statistics away from their initial values
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 12, 12)
    expected = model(x)
    converted = D._convert_gloo(model)
    assert [type(m) for m in converted if isinstance(m, nn.modules.batchnorm._BatchNorm)] == [D._GlooSyncBatchNorm] * 2
    state = converted.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in state)
    assert torch.equal(converted(x), expected)  # BatchNormAct2d's activation kept
    assert (converted[:2](x) >= 0).all() and (converted[1].act(torch.tensor(-1.0)) == 0)  # ReLU after the norm


def test_torchrun_command_single_node_and_rendezvous_from_the_environment():
    one = D.torchrun_command(["bench.cli", "pretrain"], nproc_per_node=2, env={})
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone", "--module", "bench.cli",
                       "pretrain"]
    static = D.torchrun_command(["m"], nproc_per_node=4, nnodes=2,
                                env={"MASTER_ADDR": "node1", "MASTER_PORT": "1234", "NODE_RANK": "1"})
    assert static[3:-2] == ["--nproc-per-node=4", "--nnodes=2", "--node-rank=1", "--master-addr=node1",
                            "--master-port=1234"]
    elastic = D.torchrun_command(["m"], nproc_per_node=1, nnodes=3, env={"PET_RDZV_ENDPOINT": "h:29400"})
    assert elastic[3:-2] == ["--nproc-per-node=1", "--nnodes=3"]
    with pytest.raises(ValueError, match="NODE_RANK"):
        D.torchrun_command(["m"], nproc_per_node=1, nnodes=2, env={"MASTER_ADDR": "node1"})
    with pytest.raises(ValueError, match="MASTER_ADDR.*PET_RDZV_ENDPOINT"):
        D.torchrun_command(["m"], nproc_per_node=1, nnodes=2, env={})


def test_no_relaunch_for_one_process_or_inside_torchrun(monkeypatch):
    def execv(*args):
        raise AssertionError(f"re-launched: {args}")

    monkeypatch.setattr(os, "execv", execv)
    D.relaunch_under_torchrun(["bench.cli"], nproc_per_node=1, nnodes=1)
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    D.relaunch_under_torchrun(["bench.cli"], nproc_per_node=2, nnodes=1)
    assert not D.is_main()  # before the process group exists, torchrun's RANK says


def test_runtime_params_are_validated_and_default_to_one_process():
    raw = render_profile("embedded")
    assert raw["runtime"] == {"nproc_per_node": 1, "nnodes": 1}
    raw["runtime"]["nproc_per_node"] = 0
    with pytest.raises(ParamsError, match=r"runtime.nproc_per_node = 0"):
        validate_params(raw)


def test_runtime_is_no_dependency_and_the_pretrain_stage_depends_on_the_ddp_code():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert not any(str(p).split(".")[0] == "runtime" for p in stage.get("params", [])), name
    for slot in ("voc", "coco"):
        assert "methods/distributed.py" in stages[f"pretrain-{slot}"]["deps"]


# ------------------------------------------------------------------------------------------------ torchrun
ITERATIONS, LR = 6, 2e-3


def _folder(path: Path, nproc: int, iterations: int = ITERATIONS, tracking: bool = True) -> Path:
    """A working folder with smoke params: pretrain of 16 images, global batch 8, on ``nproc`` processes."""
    params = render_profile("smoke")
    params["pretrain"].update(images=16, val_images=8, iterations=iterations, batch_size=8, lr=LR)
    params["runtime"]["nproc_per_node"] = nproc
    params["tracking"]["enabled"] = tracking
    path.mkdir(parents=True)
    (path / "params.yaml").write_text(dump_params(params))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT", *D.TORCHRUN_ENV):
        env.pop(key, None)
    return env


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_two_ranks_train_the_single_process_schedule_and_rank_0_alone_writes(tmp_path, monkeypatch, one_thread):
    two = _folder(tmp_path / "two", nproc=2)
    t0 = time.perf_counter()
    result = subprocess.run([str(BENCH), "pretrain", "--dataset", "voc"], cwd=two, env=_env(), capture_output=True,
                            text=True, timeout=900)
    wall = time.perf_counter() - t0
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "re-launching under torchrun" in result.stderr and "rank 0 of 2 joined (gloo on cpu)" in result.stderr

    # rank 0 alone wrote: the outputs once, one MLflow run, no temporaries or markers
    (buffered,) = (two / ".mlflow-buffer").glob("*.json")
    assert _files(two) == {"params.yaml", "metrics/pretrain/voc.json", "runs/voc/pretrain/run.json",
                           "runs/voc/pretrain/timing.json", "runs/voc/pretrain/regnetx_002.pt",
                           f".mlflow-buffer/{buffered.name}", f".mlflow-buffer/{buffered.stem}.artifacts/0/run.json"}
    run = json.loads(buffered.read_text())
    assert run["status"] == "FINISHED" and run["tags"]["runtime.world_size"] == "2"
    assert run["tags"]["runtime.backend"] == "gloo" and run["tags"]["backend.torch"] == torch.__version__
    two_record = json.loads((two / "runs/voc/pretrain/run.json").read_text())
    assert two_record["distributed"] == {"world_size": 2, "backend": "gloo", "batch_per_rank": 4}
    assert two_record["cpu_threads"] == 1

    # the same stage in one process (in this one, one thread as each rank)
    one = _folder(tmp_path / "one", nproc=1, tracking=False)
    monkeypatch.chdir(one)
    from bench.cli import main

    assert main(["pretrain", "--dataset", "voc"]) == 0
    one_record = json.loads((one / "runs/voc/pretrain/run.json").read_text())
    assert "distributed" not in one_record and one_record["cpu_threads"] == 1

    # Tolerances. The two runs add the same numbers in another order (batch-norm statistics and gradients are
    # sums over 2 × 4 images instead of 8, then all-reduced): float32 rounding, ~1e-7 relative per sum. The loss,
    # an average over everything, keeps that size (measured: 3e-7 relative after 6 steps): rtol 1e-5. A wrong
    # schedule (per-rank batch norm, per-rank batch of 8, unequal flips) moves it by 1e-3 or more. Single
    # weights are looser: Adam divides each gradient by its own running magnitude, so a component whose true
    # gradient is ~0 takes a step of up to lr in the direction of its rounding noise; no weight can drift by more
    # than iterations × lr (measured: 0.0045 of 0.012). The held-out scores (threshold 0.5, ranks) come out equal.
    (h_two,), (h_one,) = (r["backbones"]["regnetx_002"]["history"] for r in (two_record, one_record))
    assert h_two["step"] == h_one["step"] == ITERATIONS
    assert h_two["loss"] == pytest.approx(h_one["loss"], rel=1e-5)
    for key in ("val.mAP", "val.label_accuracy", "val.exact_match"):
        assert h_two[key] == pytest.approx(h_one[key], abs=1e-6), key
    w_two, w_one = (torch.load(d / "runs/voc/pretrain/regnetx_002.pt", weights_only=True) for d in (two, one))
    assert w_two.keys() == w_one.keys()
    drift = max((w_two[k].double() - w_one[k].double()).abs().max().item() for k in w_one)
    assert drift <= ITERATIONS * LR
    print(f"\n2 gloo ranks: {wall:.1f} s wall for the stage; loss {h_two['loss']:.7f} vs {h_one['loss']:.7f}, "
          f"largest weight difference {drift:.2e}")


@pytest.mark.slow
def test_a_killed_rank_fails_the_stage_without_outputs(tmp_path):
    folder = _folder(tmp_path / "kill", nproc=2, iterations=100_000)
    # the command `bench pretrain` re-launches itself as (the test above runs that way), started directly: the
    # outer bench process would only cost its imports
    command = D.torchrun_command(["bench.cli", "pretrain", "--dataset", "voc"], nproc_per_node=2, env={})
    stage = subprocess.Popen(command, cwd=folder, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: stage.stdout.read(256), "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 600
        while "loss=" not in "".join(chunks):  # rank 0's progress bar: training steps are being taken
            assert stage.poll() is None and time.monotonic() < deadline, "".join(chunks)[-3000:]
            time.sleep(0.2)
        # the ranks are the children of torchrun's agent
        ranks = [int(pid) for pid in Path(f"/proc/{stage.pid}/task/{stage.pid}/children").read_text().split()]
        (victim,) = [pid for pid in ranks if b"LOCAL_RANK=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")]
        os.kill(victim, signal.SIGKILL)
        returncode = stage.wait(timeout=300)
    finally:
        if stage.poll() is None:
            stage.kill()
            stage.wait()
    reader.join(timeout=10)
    output = "".join(chunks)
    assert returncode != 0
    assert "Root Cause" in output and "rank      : 1" in output and "SIGKILL" in output, output[-3000:]
    # nothing written, no temporaries, and the one run recorded (by rank 0) ended FAILED or KILLED
    (buffered,) = (folder / ".mlflow-buffer").glob("*.json")
    assert _files(folder) == {"params.yaml", f".mlflow-buffer/{buffered.name}"}
    run = json.loads(buffered.read_text())
    assert run["status"] in ("FAILED", "KILLED") and run["tags"]["runtime.world_size"] == "2", run["tags"]

