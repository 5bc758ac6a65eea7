"""MLflow tracking: a stage records its run locally without waiting for MLflow; a flush sends it with its
params, tags, metrics and status; concurrent stages and flushes lose nothing."""

import json
import multiprocessing as mp
import os
import sys

import pytest

from bench.tracking import buffered_runs, flush, stage_run, tracking_uri


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A repository root with its own buffer, and an SQLite store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _log_run(name: str, steps: int) -> None:
    with stage_run(enabled=True, experiment="wsis-bench/test", run_name=name,
                   params={"mdm.hard_pixel_ratio": 0.2, "name": name}, tags={"stage": "test"}) as run:
        for step in range(steps):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_a_stage_records_its_run_without_importing_mlflow(store, tmp_path):
    code = ("import sys; from bench.tracking import stage_run\n"
            "with stage_run(enabled=True, experiment='e', run_name='r', params={'a': 1}, tags={}) as run:\n"
            "    run.log_metrics({'loss': 0.5}, step=3)\n"
            "assert 'mlflow' not in sys.modules, 'a stage imported mlflow'\n")
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)
    (path,) = buffered_runs()
    record = json.loads(path.read_text())
    assert record["status"] == "FINISHED" and record["params"] == {"a": "1"}
    assert [m[0] for m in record["metrics"]] == ["loss"] and record["metrics"][0][3] == 3
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_a_flushed_run_carries_params_tags_metrics_and_leaves_the_buffer(store):
    assert tracking_uri() == store
    _log_run("one", 3)
    assert flush() == (1, []) and buffered_runs() == []
    client = _client(store)
    (run,) = client.search_runs([client.get_experiment_by_name("wsis-bench/test").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["mdm.hard_pixel_ratio"] == "0.2"
    assert run.data.tags["stage"] == "test"
    assert "git.commit" in run.data.tags and run.data.tags["device"].startswith("cpu")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2]


@pytest.mark.slow
def test_an_exception_ends_the_run_failed_with_the_error(store):
    with pytest.raises(RuntimeError):
        with stage_run(enabled=True, experiment="wsis-bench/test", run_name="boom", params={}, tags={}):
            raise RuntimeError("disk full")
    flush()
    client = _client(store)
    (run,) = client.search_runs([client.get_experiment_by_name("wsis-bench/test").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: disk full"


def _stage_then_flush(root: str, uri: str, name: str) -> None:
    os.environ["DVC_ROOT"], os.environ["MLFLOW_TRACKING_URI"] = root, uri
    _log_run(name, 40)
    flush()


@pytest.mark.slow
def test_two_stages_logging_and_flushing_at_once_lose_no_runs_or_steps(store, tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_stage_then_flush, args=(str(tmp_path), store, f"run{i}")) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0, 0]
    flush()  # whatever a process found claimed by the other is sent by now; nothing is sent twice
    client = _client(store)
    runs = client.search_runs([client.get_experiment_by_name("wsis-bench/test").experiment_id])
    assert sorted(r.data.params["name"] for r in runs) == ["run0", "run1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 40


def test_a_run_the_store_refuses_stays_buffered(store, tmp_path, monkeypatch):
    _log_run("kept", 1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: every request fails
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    sent, errors = flush()
    assert sent == 0 and len(errors) == 1 and len(buffered_runs()) == 1


def test_disabled_tracking_writes_no_buffer_and_no_store(store, tmp_path):
    with stage_run(enabled=False, experiment="x", run_name="y", params={}, tags={}) as run:
        run.log_metrics({"a": 1.0})
    assert buffered_runs() == [] and not (tmp_path / "mlflow.db").exists()


def test_the_device_tag_of_a_cpu_run_names_the_cpu_and_the_thread_count():
    import torch

    from bench.tracking import device_name

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine names its GPU")
    assert device_name().startswith("cpu: ")
    assert device_name().endswith(f", {torch.get_num_threads()} torch threads")
