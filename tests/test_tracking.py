"""MLflow tracking: runs carry params/tags, failures end FAILED, concurrent stages lose nothing."""

import multiprocessing as mp
import os

import pytest

from bench.tracking import stage_run, tracking_uri

pytestmark = pytest.mark.slow


def _log_run(uri: str, name: str, steps: int) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = uri
    with stage_run(enabled=True, experiment="wsis-bench/test", run_name=name,
                   params={"mdm.hard_pixel_ratio": 0.2, "name": name}, tags={"stage": "test"}) as run:
        for step in range(steps):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_a_run_records_params_tags_and_metrics(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking_uri() == uri
    _log_run(uri, "one", 3)
    client = _client(uri)
    exp = client.get_experiment_by_name("wsis-bench/test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["mdm.hard_pixel_ratio"] == "0.2"
    assert run.data.tags["stage"] == "test"
    assert "git.commit" in run.data.tags and run.data.tags["device"].startswith("cpu")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2]


def test_an_exception_ends_the_run_failed_with_the_error(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(RuntimeError):
        with stage_run(enabled=True, experiment="wsis-bench/test", run_name="boom", params={}, tags={}):
            raise RuntimeError("disk full")
    client = _client(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("wsis-bench/test").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: disk full"


def test_two_stages_logging_at_once_lose_no_runs_or_steps(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_log_run, args=(uri, f"run{i}", 40)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0, 0]
    client = _client(uri)
    runs = client.search_runs([client.get_experiment_by_name("wsis-bench/test").experiment_id])
    assert sorted(r.data.params["name"] for r in runs) == ["run0", "run1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 40


def test_disabled_tracking_writes_no_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with stage_run(enabled=False, experiment="x", run_name="y", params={}, tags={}) as run:
        run.log_metrics({"a": 1.0})
    assert not (tmp_path / "mlflow.db").exists()


def test_the_device_tag_of_a_cpu_run_names_the_cpu_and_the_thread_count():
    import torch

    from bench.tracking import device_name

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine names its GPU")
    assert device_name().startswith("cpu: ")
    assert device_name().endswith(f", {torch.get_num_threads()} torch threads")
