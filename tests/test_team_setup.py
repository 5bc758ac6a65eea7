"""The team set-up of docs/scaling.md with its real components: a shared ``mlflow server`` (SQLite backend, local
artifact store, served over HTTP) receives the runs of pipeline stages, and a DVC remote (a local folder standing
for the team's shared storage) lets a fresh clone pull a pipeline's outputs without re-running any stage.

One scratch smoke repository serves both tests: ``dvc repro`` of two cheap stages (``prepare-voc``, which logs
metrics, and ``pretrain-voc``, which also logs its ``run.json`` as an artifact) with ``MLFLOW_TRACKING_URI``
pointing at the server, which starts meanwhile."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from smoke_repo import _env, init_repo, run, write_params

pytestmark = pytest.mark.slow
STAGES = ("prepare-voc", "pretrain-voc")
MLFLOW = Path(sys.executable).parent / "mlflow"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"mlflow server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"mlflow server at {url} not healthy after {timeout} s")


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """(repo, server URL, server folder): the smoke repository after ``dvc repro`` of :data:`STAGES` with tracking on
    and ``MLFLOW_TRACKING_URI`` at a running ``mlflow server``; stopped at the end of the module."""
    root = tmp_path_factory.mktemp("team")
    server_dir = root / "server"
    server_dir.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # The job runner (7 huey consumer processes, for MLflow's GenAI jobs) is no part of tracking: off.
    server_env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    server_env.pop("MLFLOW_TRACKING_URI", None)
    log = open(server_dir / "server.log", "w")
    server = subprocess.Popen(
        [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{server_dir / 'mlflow.db'}",
         "--artifacts-destination", str(server_dir / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=server_dir, env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        repo = root / "repo"
        repo.mkdir()
        init_repo(repo)
        write_params(repo, **{"tracking.enabled": True})
        (repo / ".gitignore").write_text("__pycache__/\n.mlflow-buffer/\n")
        env = dict(_env(repo), MLFLOW_TRACKING_URI=url)
        # The stages never wait for the server: they buffer their runs (bench/tracking.py) while it starts.
        result = subprocess.run(["dvc", "repro", *STAGES], cwd=repo, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        _wait_healthy(url, server, timeout=600)
        yield repo, url, server_dir, env
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
        log.close()


def test_stage_runs_and_artifacts_reach_a_shared_mlflow_server(team, monkeypatch):
    repo, url, server_dir, env = team
    # what `bench tracking flush` runs, in this process (a `bench` process would import every stage's code first)
    from bench.tracking import flush, tracking_uri

    monkeypatch.setenv("DVC_ROOT", str(repo))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    assert tracking_uri() == url
    assert flush() == (2, [])
    assert not list((repo / ".mlflow-buffer").glob("*.json")), "flushed runs must leave the buffer"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("wsis-bench/smoke")
    runs = {r.data.tags["stage"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"prepare", "pretrain"}
    for stage, r in runs.items():
        assert r.info.status == "FINISHED", stage
        assert r.data.tags["dvc.stage"] == f"{stage}-voc" and r.data.tags["dataset"] == "voc"
        assert r.data.params["profile"] == "smoke"
    assert runs["prepare"].data.metrics["train_aug.images"] == 12  # smoke VOC: 8 train + 4 SBD-only images
    assert runs["prepare"].data.metrics["val.images"] == 6
    pretrain = runs["pretrain"]
    assert "regnetx_002.val.mAP" in pretrain.data.metrics
    assert pretrain.data.params["pretrain.iterations"] == "2"
    # The artifact went through the server (mlflow-artifacts:/ proxy) into its artifact store, byte for byte.
    assert pretrain.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [a.path for a in client.list_artifacts(pretrain.info.run_id)] == ["run.json"]
    fetched = Path(client.download_artifacts(pretrain.info.run_id, "run.json", str(repo.parent / "fetched")))
    assert json.loads(fetched.read_text()) == json.loads((repo / "runs/voc/pretrain/run.json").read_text())
    stored = list((server_dir / "artifacts").rglob("run.json"))
    assert len(stored) == 1 and stored[0].read_bytes() == fetched.read_bytes()


def test_a_fresh_clone_pulls_the_outputs_from_a_dvc_remote_without_re_running(team, tmp_path):
    repo, _, _, env = team
    remote = tmp_path / "remote"
    git = ["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci"]
    run(["dvc", "remote", "add", "-d", "team", str(remote)], repo)
    run(["git", "add", "-A"], repo)
    run([*git, "commit", "-q", "-m", "pipeline outputs tracked by dvc.lock"], repo)
    pushed = run(["dvc", "push", *STAGES], repo).stdout  # the stages that ran (the others have no outputs)
    assert remote.is_dir() and any(p.is_file() for p in remote.rglob("*")), pushed

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "runs/voc/pretrain").exists() and not (clone / "data/canonical/voc").exists()
    run(["dvc", "pull", *STAGES], clone)
    for rel in ("runs/voc/pretrain/regnetx_002.pt", "runs/voc/pretrain/run.json", "data/canonical/voc"):
        assert (clone / rel).exists(), rel
    assert (clone / "runs/voc/pretrain/regnetx_002.pt").read_bytes() == \
        (repo / "runs/voc/pretrain/regnetx_002.pt").read_bytes()
    status = run(["dvc", "status", *STAGES], clone).stdout
    assert "Data and pipelines are up to date" in status, status  # `dvc repro` would run no stage
    shutil.rmtree(clone)
