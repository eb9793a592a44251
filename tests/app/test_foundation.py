"""The installable service: health, readiness, docs, settings from the environment, the CLI, and the
container files read against the README."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from app.main import create_app
from facesearch.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_live_always_and_ready_only_after_the_lifespan_loaded(data_dir: Path) -> None:
    app = create_app(Settings(data_dir=data_dir))
    plain = TestClient(app)  # no context manager: the lifespan has not run
    assert plain.get("/health/live").status_code == 200
    r = plain.get("/health/ready")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    assert plain.get("/v1/identities").json()["code"] == "not_ready"
    with TestClient(app) as client:
        r = client.get("/health/ready")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ready" and body["gallery_faces"] == 0 and body["model"]
        info = client.get("/v1/info").json()
        assert info["service"] == "facesearch" and info["version"]
        assert info["model"]["embedding_size"] == 512
        assert client.get("/docs").status_code == 200
        assert "/v1/search" in client.get("/openapi.json").json()["paths"]
        assert client.get("/no/such/path").status_code == 404
        assert client.post("/v1/search", data={"k": "3"}).status_code == 415
        # every request counted by its route (the path within /v1), method and status
        metrics = client.get("/metrics").text
        for line in ('facesearch_requests_total{method="GET",route="/info",status="200"} 1.0',
                     'facesearch_requests_total{method="GET",route="unmatched",status="404"} 1.0',
                     'facesearch_requests_total{method="POST",route="/search",status="415"} 1.0',
                     'facesearch_request_seconds_count{method="GET",route="/info"} 1.0'):
            assert line in metrics


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACESEARCH_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("FACESEARCH_PORT", "9123")
    monkeypatch.setenv("FACESEARCH_API_KEYS", "alpha, beta ,")
    monkeypatch.setenv("FACESEARCH_MAX_UPLOAD_MB", "2.5")
    monkeypatch.setenv("FACESEARCH_INDEX_KIND", "hnsw")
    s = Settings()
    assert s.data_dir == tmp_path / "d" and s.port == 9123 and s.api_keys == ["alpha", "beta"]
    assert s.max_upload_bytes == int(2.5 * 1024 * 1024) and s.index_kind == "hnsw"
    monkeypatch.setenv("FACESEARCH_PORT", "99999")
    with pytest.raises(ValueError):
        Settings()


def test_cli_help() -> None:
    exe = shutil.which("facesearch", path=str(Path(sys.executable).parent)) or "facesearch"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("serve", "train", "evaluate", "align", "gallery", "enroll", "export"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command
    out = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--port" in out and "--host" in out
    bad = subprocess.run([exe, "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


# every training command's help and usage errors, in a fresh interpreter that must not import torch for them
_HELP_WITHOUT_TORCH = """
import sys
from facesearch import cli
from model.train.commands import OPTIONS
for command in OPTIONS:
    for argv, code in (["--help"], 0), (["--no-such-option"], 2):
        try:
            cli.main([command, *argv])
        except SystemExit as e:
            assert e.code == code, (command, argv, e.code)
        else:
            raise AssertionError(f"{command} {argv} did not exit")
print(len(OPTIONS), sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "facenet_pytorch")))
"""


def test_training_commands_answer_help_without_importing_torch() -> None:
    run = subprocess.run([sys.executable, "-c", _HELP_WITHOUT_TORCH], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "11 []", run.stdout[-500:]
    assert "usage: facesearch calibrate-openset" in run.stdout and "CFP (Celebrities in Frontal-Profile" in run.stdout
    assert "facesearch train: error: the following arguments are required: --data, --out" in run.stderr


def test_serve_starts_a_real_server(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(tmp_path / "data")
    server.wait_ready()
    with urllib.request.urlopen(server.url + "/docs", timeout=5) as r:
        assert r.status == 200 and b"swagger" in r.read().lower()
    with urllib.request.urlopen(server.url + "/", timeout=5) as r:
        assert r.status == 200 and b"FaceSearch" in r.read()
    assert (tmp_path / "data" / "gallery.db").exists()


def _readme_commands() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    found = dict(re.findall(r"<!-- (\w+-command) -->\s*```bash\n(.+?)\n```", text))
    return found


def test_readme_opens_with_the_two_commands() -> None:
    cmds = _readme_commands()
    assert "facesearch serve" in cmds["serve-command"] and "pip install ." in cmds["serve-command"]
    assert "pytest" in cmds["test-command"] and "[dev" in cmds["test-command"]
    head = (ROOT / "README.md").read_text()[:1500]
    assert "serve-command" in head and "test-command" in head


def test_dockerfile_matches_the_readme_install() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.M)
    assert len(stages) >= 2 and all("slim" in image for image, _ in stages)
    assert "torch" not in text.lower().replace("pytorch", ""), "the image installs no torch: serving needs none"
    assert re.search(r'^RUN pip install "\.\$\{EXTRAS\}"$', text, re.M), "the image installs as the README does"
    assert re.search(r'^ARG EXTRAS=""$', text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    health = re.search(r"^HEALTHCHECK.*\n?.*", text, re.M)
    assert health and "urllib" in text.split("HEALTHCHECK", 1)[1].split("\n\n")[0] and "/health/live" in text
    assert re.search(r'^CMD \["facesearch", "serve"\]', text, re.M)
    assert re.search(r"^VOLUME", text, re.M)


def test_compose_file_is_valid() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svc = compose["services"]["facesearch"]
    assert "facesearch-data" in compose["volumes"]
    assert any(v.startswith("facesearch-data:") for v in svc["volumes"])
    assert "urllib" in " ".join(svc["healthcheck"]["test"])
    assert "FACESEARCH_API_KEY" in str(svc["environment"]["FACESEARCH_API_KEYS"])
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is needed to validate the compose file (.ci/run installs it)"
    env = {**os.environ, "FACESEARCH_API_KEY": "test-key"}
    r = subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr


def test_scale_compose_file_is_valid() -> None:
    """The scale-out stack: three replicas behind nginx on PostgreSQL and Milvus standalone (etcd, MinIO)."""
    compose = yaml.safe_load((ROOT / "docker-compose.scale.yml").read_text())
    services = compose["services"]
    replicas = [name for name in services if name.startswith("facesearch-")]
    assert len(replicas) == 3
    for name in replicas:
        env = services[name]["environment"]
        url = env["FACESEARCH_DATABASE_URL"]
        assert url.startswith("postgresql://") and "@postgres:5432/" in url
        assert env["FACESEARCH_VECTOR_URL"] == "http://milvus:19530"
        assert services[name]["build"]["args"]["EXTRAS"] == "[milvus]"
        assert "/health/ready" in " ".join(services[name]["healthcheck"]["test"])
    assert services["milvus"]["image"].startswith("milvusdb/milvus:")
    assert set(services["milvus"]["depends_on"]) == {"etcd", "minio"}
    assert services["postgres"]["image"].startswith("postgres:")
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert all(f"server {name}:8000" in nginx for name in replicas)
    assert any(v.startswith("./deploy/nginx.conf:") for v in services["nginx"]["volumes"])
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is needed to validate the compose file (.ci/run installs it)"
    env = {**os.environ, "FACESEARCH_API_KEY": "test-key", "POSTGRES_PASSWORD": "test-password"}
    r = subprocess.run([exe, "-f", str(ROOT / "docker-compose.scale.yml"), "config", "-q"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    # without the secrets it refuses to start instead of running with empty ones
    env = {k: v for k, v in os.environ.items() if k not in ("FACESEARCH_API_KEY", "POSTGRES_PASSWORD")}
    r = subprocess.run([exe, "-f", str(ROOT / "docker-compose.scale.yml"), "config", "-q"], capture_output=True,
                       text=True, env=env)
    said = r.stderr + r.stdout
    assert r.returncode != 0 and ("POSTGRES_PASSWORD" in said or "FACESEARCH_API_KEY" in said), said
