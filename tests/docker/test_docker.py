"""The image built with the project's own Dockerfile, and both compose stacks, run for real (marker ``docker``:
`pytest -m docker`; .ci/run starts a Docker engine and runs it after the main suite).

Base images come from Debian packages (tests/docker/engine.py); every build and container uses host networking and
the tests talk only to 127.0.0.1. The replica tier comes from docker-compose.scale.yml itself, rendered for host
networking here (replicas on their own ports, nginx's upstreams on 127.0.0.1, Milvus standalone replaced by a Milvus
Lite server): one source of truth for the stack a user runs.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.app.client import call, quote
from tests.conftest import free_port, lfw_photo
from tests.docker import engine
from tests.enrollers import Enrollers

pytestmark = pytest.mark.docker
KEY = "docker-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def image() -> str:
    engine.engine_ready()
    t = time.monotonic()
    tag = engine.project_image()
    artifacts = Path(os.environ.get("FACESEARCH_ARTIFACTS", engine.ROOT / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "docker-image.json").write_text(json.dumps({
        "image": tag, "size_mb": round(engine.image_size_mb(tag)), "build_s": round(time.monotonic() - t),
        "build_stage_images_left": engine.build_stage_images()}))
    # the image serves without PyTorch: the shipped ONNX graphs are all the service runs
    absent = engine.docker("run", "--rm", "--network", "host", tag, "python", "-c",
                           "import importlib.util as u; print([m for m in ('torch', 'torchvision', 'facenet_pytorch') "
                           "if u.find_spec(m)])").stdout.strip()
    assert absent == "[]"
    return tag


def wait_ready(url: str, container: str | None = None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/health/ready", timeout=3) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if container is not None:
            state = engine.docker("inspect", "-f", "{{.State.Running}}", container, check=False).stdout.strip()
            if state == "false":
                logs = engine.docker("logs", container, check=False)
                raise AssertionError(f"{container} exited:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        assert time.monotonic() < deadline, f"{url} did not become ready"
        time.sleep(1)


def enroll(url: str, ident: str, name: str, photos: tuple[int, ...] = (1, 2), timeout: float = 120
           ) -> tuple[int, Any]:
    return call(f"{url}/v1/identities/{quote(ident)}/faces", "POST", fields={"face": "largest"},
                files=[("image", lfw_photo(name, k)) for k in photos], timeout=timeout, headers=AUTH)


def search(url: str, name: str, k: int = 3) -> tuple[int, Any]:
    return call(f"{url}/v1/search", "POST", fields={"k": "5"}, files=[("image", lfw_photo(name, k))], headers=AUTH)


def test_single_node_serves_persists_and_stops_cleanly(image: str) -> None:
    tag = uuid.uuid4().hex[:8]
    volume, port = f"facesearch-test-{tag}", free_port()
    url = f"http://127.0.0.1:{port}"
    names: list[str] = []

    def start() -> str:
        name = f"facesearch-test-{tag}-{len(names)}"
        names.append(name)
        engine.docker("run", "-d", "--name", name, "--network", "host", "-e", f"FACESEARCH_API_KEYS={KEY}",
                      "-e", "FACESEARCH_HOST=127.0.0.1", "-e", f"FACESEARCH_PORT={port}", "-v", f"{volume}:/data",
                      image)
        wait_ready(url, name)
        return name

    try:
        first = start()
        assert engine.docker("exec", first, "id", "-u").stdout.strip() == "10001"  # not root
        # the image's own health check, on the port the service was moved to
        check = json.loads(engine.docker("inspect", "-f", "{{json .Config.Healthcheck.Test}}", image).stdout)
        assert check[0] == "CMD" and engine.docker("exec", first, *check[1:], check=False).returncode == 0
        assert call(f"{url}/v1/identities")[0] == 401
        for person in ("Colin_Powell", "Tony_Blair"):
            status, body = enroll(url, person, person)
            assert status == 201, body
        status, body = search(url, "Colin_Powell")
        assert status == 200 and body["faces"][0]["identity"] == "Colin_Powell", body
        assert body["faces"][0]["decision"] == "match"
        status, body = call(f"{url}/v1/verify", "POST", fields={"identity": "Tony_Blair"},
                            files=[("image", lfw_photo("Tony_Blair", 3))], headers=AUTH)
        assert status == 200 and body["same_person"] is True, body
        status, body = call(f"{url}/v1/identities/Tony_Blair", "DELETE", headers=AUTH)
        assert status == 200 and body["faces_deleted"] == 2
        status, last = enroll(url, "Hugo_Chavez", "Hugo_Chavez")  # the last write before the stop
        assert status == 201, last
        engine.docker("stop", "-t", "30", first)
        assert engine.docker("inspect", "-f", "{{.State.ExitCode}}", first).stdout.strip() == "0"
        second = start()  # a new container on the same volume serves the same gallery
        status, body = call(f"{url}/v1/identities/Hugo_Chavez", headers=AUTH)
        assert status == 200 and sorted(f["face_id"] for f in body["face_list"]["items"]) == \
            sorted(f["face_id"] for f in last["faces"])
        assert call(f"{url}/v1/identities/Tony_Blair", headers=AUTH)[0] == 404
        status, body = search(url, "Hugo_Chavez")
        assert status == 200 and body["faces"][0]["identity"] == "Hugo_Chavez", body
        engine.docker("stop", "-t", "30", second)
    finally:
        for name in names:
            engine.docker("rm", "-f", name, check=False)
        engine.docker("volume", "rm", "-f", volume, check=False)


def host_network_stack(folder: Path, replica_ports: list[int], pg_port: int, milvus_port: int,
                       nginx_port: int) -> Path:
    """docker-compose.scale.yml and deploy/nginx.conf rendered for host networking: each replica on its own
    loopback port, PostgreSQL on another, nginx's upstreams on 127.0.0.1, Milvus standalone (with etcd and MinIO)
    replaced by the Milvus Lite server the test runs."""
    compose = yaml.safe_load((engine.ROOT / "docker-compose.scale.yml").read_text())
    services = compose["services"]
    replicas = sorted(n for n in services if n.startswith("facesearch-"))
    assert len(replicas) == len(replica_ports)
    nginx_conf = (engine.ROOT / "deploy" / "nginx.conf").read_text()
    for name, port in zip(replicas, replica_ports, strict=True):
        svc = services[name] = copy.deepcopy(services[name])  # the YAML anchor made them one object
        svc.pop("build")
        svc.pop("ports", None)
        svc["image"] = engine.PROJECT_IMAGE
        svc["network_mode"] = "host"
        env = svc["environment"]
        env["FACESEARCH_HOST"] = "127.0.0.1"
        env["FACESEARCH_PORT"] = str(port)
        env["FACESEARCH_DATABASE_URL"] = env["FACESEARCH_DATABASE_URL"].replace("@postgres:5432/",
                                                                                f"@127.0.0.1:{pg_port}/")
        env["FACESEARCH_VECTOR_URL"] = f"http://127.0.0.1:{milvus_port}"
        svc["depends_on"] = {"postgres": svc["depends_on"]["postgres"]}
        nginx_conf = nginx_conf.replace(f"server {name}:8000", f"server 127.0.0.1:{port}")
    assert "server facesearch-" not in nginx_conf
    nginx_conf = nginx_conf.replace("listen 80;", f"listen 127.0.0.1:{nginx_port};")
    (folder / "nginx.conf").write_text(nginx_conf)
    nginx = services["nginx"]
    nginx.pop("ports")
    nginx["network_mode"] = "host"
    nginx["volumes"] = [f"{folder / 'nginx.conf'}:/etc/nginx/nginx.conf:ro"]
    pg = services["postgres"]
    pg["network_mode"] = "host"
    pg["command"] = [*pg["command"], "-p", str(pg_port), "-c", "listen_addresses=127.0.0.1"]
    pg["healthcheck"]["test"] = ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "facesearch",
                                 "-d", "facesearch"]
    pg["healthcheck"]["interval"] = "2s"
    for gone in ("milvus", "etcd", "minio"):
        services.pop(gone)
        compose["volumes"].pop(f"{gone}-data")
    path = folder / "docker-compose.host.yml"
    path.write_text(yaml.safe_dump(compose, sort_keys=False))
    return path


class KillWindow:
    """A replica container killed under traffic: nginx never resends a POST that reached it, so a 502 is tolerated
    for requests in flight from just before the kill until it has taken effect, and for nothing else."""

    def __init__(self) -> None:
        self.began = self.ended = math.inf  # time.monotonic() of the kill

    def kill(self, container: str) -> None:
        self.began = time.monotonic()
        engine.docker("kill", container)
        time.sleep(1)  # the process is gone and its port refuses within this; later requests must all succeed
        self.ended = time.monotonic()

    def tolerates(self, url: str, answer: tuple[int, Any] | None, error: OSError | None, began: float) -> bool:
        return answer is not None and answer[0] == 502 and began <= self.ended and time.monotonic() >= self.began


@pytest.fixture
def scale_stack(image: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    engine.standin("postgres", "postgres:16")
    engine.standin("nginx", "nginx:1.27-alpine")
    ports = [free_port() for _ in range(3)]
    pg_port, milvus_port, nginx_port = free_port(), free_port(), free_port()
    compose_file = host_network_stack(tmp_path, ports, pg_port, milvus_port, nginx_port)
    project = f"fstest{uuid.uuid4().hex[:8]}"
    milvus_exe = shutil.which("milvus-lite", path=str(Path(sys.executable).parent)) or "milvus-lite"
    milvus_log = (tmp_path / "milvus.log").open("w")
    milvus = subprocess.Popen([milvus_exe, "server", "--data-dir", str(tmp_path / "milvus"), "--host", "127.0.0.1",
                               "--port", str(milvus_port)], stdout=milvus_log, stderr=subprocess.STDOUT)
    env = {**os.environ, "FACESEARCH_API_KEY": KEY, "POSTGRES_PASSWORD": uuid.uuid4().hex}
    compose = [shutil.which("docker-compose") or "docker-compose", "-f", str(compose_file), "-p", project]
    try:
        up = subprocess.run([*compose, "up", "-d", "--no-build"], capture_output=True, text=True, env=env,
                            timeout=900)
        assert up.returncode == 0, up.stderr[-4000:]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for i, url in enumerate(urls):
            wait_ready(url, f"{project}_facesearch-{i + 1}_1")
        yield {"project": project, "urls": urls, "nginx": f"http://127.0.0.1:{nginx_port}", "compose": compose,
               "env": env}
    finally:
        subprocess.run([*compose, "down", "-v", "-t", "20"], capture_output=True, text=True, env=env, timeout=600)
        milvus.terminate()
        milvus.wait(timeout=60)
        milvus_log.close()


def top(url: str, name: str) -> list[tuple[str, int]]:
    status, body = search(url, name)
    assert status == 200, body
    return [(c["identity"], c["face_id"]) for c in body["faces"][0]["candidates"]]


def settle(urls: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        infos = [call(f"{u}/v1/info", headers=AUTH)[1]["gallery"] for u in urls]
        if all(i["indexed"] == i["faces"] == infos[0]["faces"] for i in infos):
            return
        assert time.monotonic() < deadline, f"replicas did not agree: {infos}"
        time.sleep(0.5)


def test_replica_tier_from_the_scale_compose_file(scale_stack: dict[str, Any]) -> None:
    urls, nginx = scale_stack["urls"], scale_stack["nginx"]
    wait_ready(nginx)
    status, body = enroll(nginx, "Colin_Powell", "Colin_Powell")
    assert status == 201, body
    settle(urls)
    for url in urls:  # enrolled through nginx, found through every replica
        assert top(url, "Colin_Powell")[0][0] == "Colin_Powell"
    window = KillWindow()
    clients = Enrollers([nginx] * 3, lambda url, ident, name, timeout: enroll(url, ident, name, timeout=timeout),
                        window.tolerates)
    clients.wait_for(4)
    victim = f"{scale_stack['project']}_facesearch-1_1"
    window.kill(victim)
    clients.wait_for(len(clients.acked) + 6)  # nginx routes around the dead replica
    acked = clients.finish()
    engine.docker("start", victim)  # it rejoins from its snapshot in /data and PostgreSQL's change log, and agrees
    wait_ready(urls[0], victim)
    settle(urls)
    status, listing = call(f"{urls[1]}/v1/identities?limit=1000", headers=AUTH)
    counts = {i["identity"]: i["faces"] for i in listing["items"]}
    assert all(n == 2 for n in counts.values()), {k: v for k, v in counts.items() if v != 2}  # none half-applied
    for ident, face_ids in acked.items():  # nothing acknowledged is lost, seen through the rejoined replica
        status, detail = call(f"{urls[0]}/v1/identities/{quote(ident)}", headers=AUTH)
        assert status == 200, f"acknowledged enrollment {ident} lost"
        assert sorted(f["face_id"] for f in detail["face_list"]["items"]) == face_ids
    probes = [ident.split("-", 1)[1] for ident in list(acked)[:3]]
    answers = [top(urls[1], p) for p in probes]
    assert [top(urls[0], p) for p in probes] == answers == [top(urls[2], p) for p in probes]
