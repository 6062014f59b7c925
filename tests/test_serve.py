"""The judge served by Ray Serve on a local Ray, over real HTTP: valid requests (JSON paths and
multipart uploads), every kind of bad input with its status and message, 16 concurrent
requests, served verdicts equal to `vrt-ray evaluate`'s, and the trace page opened in headless
Chromium with every frame decoded and the verdicts visible."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
import requests
from video_samples import encode

from vrt_ray import config
from vrt_ray.serve_results import trace_summary
from vrt_ray.trajectory import Trajectory

PAIRS = {"p1": ("scene alpha", "short"), "p2": ("scene bravo", "long"),
         "p3": ("scene charlie", "short")}
SCRIPTED = "scene scripted"  # the replica is steered to answer this prompt (browser test)
ANSWER = {"TA": "A", "VQ": "B", "MQ": "tie", "overall": "A"}
DIMS = ["TA", "VQ", "MQ", "overall"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Videos under the media root, a benchmark file naming them, and files to refuse."""
    base = tmp_path_factory.mktemp("serve")
    root = base / "media"
    root.mkdir()
    for name, (a, b) in {"short": (20, 16), "long": (40, 36)}.items():
        encode(root / f"{name}_A.mp4", "libx264", a)
        encode(root / f"{name}_B.mp4", "libx264", b)
    (root / "notes.mp4").write_text("not a video")
    (root / "big.mp4").write_bytes(b"\0" * (2**20 + 1))
    encode(base / "outside.mp4", "libx264", 8)
    (root / "escape.mp4").symlink_to(base / "outside.mp4")
    rows = [{"id": pid, "prompt": prompt, "labels": {"overall": "A"},
             "video_a": f"{length}_A.mp4", "video_b": f"{length}_B.mp4"}
            for pid, (prompt, length) in PAIRS.items()]
    (root / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def served(local_ray, tiny_model_dir, media):
    from ray import serve

    from jobs.serve import deploy

    base = media.parent
    cfg = config.load("tiny_cpu", [
        f"model.path={tiny_model_dir}", f"output_dir={base}/out", f"serve.media_root={media}",
        f"serve.port={free_port()}", "serve.num_cpus=0.5", "serve.max_video_mb=1",
        "serve.max_prompt_chars=200", "serve.max_batch_size=8", "protocol.initial_frames=2",
        "protocol.max_turns=1", "protocol.max_new_tokens=40", "video.min_pixels=784",
        "video.max_pixels=3136", "rollout.num_workers=1", "rollout.num_cpus=0.5",
        "rollout.timeout_s=120", f"eval.data={media}/bench.jsonl", "eval.batch_size=4",
        f"tracking.uri=sqlite:///{base}/mlflow.db", "tracking.experiment=serve-test"])
    url = deploy(cfg, str(tiny_model_dir))
    for _ in range(100):  # the HTTP proxy may take a moment after the app is up
        try:
            if requests.get(f"{url}/healthz", timeout=5).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield SimpleNamespace(url=url, cfg=cfg, media=media, out=base / "out")
    serve.shutdown()


def judge(served, timeout=120, **fields):
    data = {"prompt": "scene alpha", "video_a": "short_A.mp4", "video_b": "short_B.mp4",
            **fields}
    return requests.post(f"{served.url}/v1/judge", json=data, timeout=timeout)


def check_answer(answer, model_dir):
    assert set(answer) == {"trace_id", "verdicts", "answer_complete", "end_reason", "trace",
                           "model", "latency_ms"}
    assert list(answer["verdicts"]) == DIMS and len(answer["trace_id"]) == 32
    assert answer["model"]["source"] == str(model_dir) and len(answer["model"]["version"]) == 12
    assert answer["latency_ms"] > 0 and answer["trace"]["turns"]
    assert answer["trace"]["initial_frames"] == [{"video": v, "index": i}
                                                 for v in "AB" for i in (1, 20 if v == "A" else 16)]


def test_cli_refuses_a_missing_model(tmp_path, capsys):
    from vrt_ray.cli import main

    assert main(["serve", "tiny_cpu", "--model", str(tmp_path / "none")]) == 2
    assert "no such model directory" in capsys.readouterr().err


def test_deployment_options_follow_the_config():
    from jobs.serve import deployment_options

    fixed = deployment_options(config.load("tiny_cpu", ["serve.num_replicas=3",
                                                        "serve.num_gpus=0.5"]))
    assert fixed == {"num_replicas": 3, "max_ongoing_requests": 64,
                     "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 0.5}}
    scaled = deployment_options(config.load("qwen2_5_vl_7b"))
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4,
                                            "target_ongoing_requests": 32}
    assert "num_replicas" not in scaled


def test_health_and_a_judge_by_media_paths(served, tiny_model_dir):
    health = requests.get(f"{served.url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    response = judge(served, options={"temperature": 0, "max_turns": 1})
    assert response.status_code == 200, response.text
    check_answer(response.json(), tiny_model_dir)
    page = requests.get(f"{served.url}/v1/trace/{response.json()['trace_id']}", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "scene alpha" in page.text and page.text.count("<img src='data:image/png") >= 4


def test_a_judge_of_uploaded_videos_deletes_them_after(served, tiny_model_dir):
    files = {name: (f"{name}.mp4", (served.media / f"long_{v}.mp4").read_bytes(), "video/mp4")
             for name, v in (("video_a", "A"), ("video_b", "B"))}
    response = requests.post(f"{served.url}/v1/judge", files=files, timeout=120,
                             data={"prompt": "scene bravo", "options": '{"temperature": 0}'})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["trace"]["initial_frames"][1] == {"video": "A", "index": 40}
    assert list((served.out / "serve" / "uploads").iterdir()) == []
    page = requests.get(f"{served.url}/v1/trace/{answer['trace_id']}", timeout=30)
    assert page.text.count("<img src='data:image/png") >= 4  # drawn before the upload went


def upload(served, video_a: bytes, **data):
    files = {"video_a": ("a.mp4", video_a, "video/mp4"),
             "video_b": ("b.mp4", (served.media / "short_B.mp4").read_bytes(), "video/mp4")}
    return requests.post(f"{served.url}/v1/judge", files=files, timeout=60,
                         data={"prompt": "scene alpha", **data})


def test_bad_input_is_a_4xx_with_a_message(served, media):
    url = f"{served.url}/v1/judge"
    cases = [
        (requests.post(url, data=b"{nope", timeout=30,
                       headers={"content-type": "application/json"}), 400, "malformed JSON"),
        (requests.post(url, json={"prompt": "p", "video_a": "short_A.mp4"}, timeout=30), 400,
         "missing field(s) in the JSON body: video_b"),
        (judge(served, options={"beam": 2}), 400, "options: unknown option(s) 'beam'"),
        (judge(served, options={"temperature": "warm"}), 400, "options.temperature: must be"),
        (judge(served, prompt=["x"]), 400, "prompt: must be a string, got list"),
        (judge(served, video_a=7), 400, "video_a: must be a path (string)"),
        (judge(served, prompt=" "), 400, "prompt: is empty"),
        (judge(served, prompt="x" * 201), 400, "prompt: 201 characters, over the limit of 200"),
        (judge(served, video_a="../outside.mp4"), 403, "video_a: '..' is not allowed"),
        (judge(served, video_b=str(media.parent / "outside.mp4")), 403,
         "is outside the media root"),
        (judge(served, video_a="escape.mp4"), 403, "video_a: 'escape.mp4' is outside the media"),
        (judge(served, video_b="gone.mp4"), 404, "video_b: no such file under the media root"),
        (judge(served, video_a="notes.mp4"), 422, "video_a: not a readable video"),
        (judge(served, video_b="big.mp4"), 413, "video_b: 1048577 bytes, over the limit of"),
        (upload(served, b"\0" * (2**20 + 10)), 413, "video_a: upload over the limit of 1048576"),
        (upload(served, b"plain text"), 422, "video_a: not a readable video"),
        (upload(served, b"x", colour="red"), 400, "unknown field in the form: 'colour'"),
        (requests.post(url, data="prompt", timeout=30, headers={"content-type": "text/plain"}),
         415, "send application/json or multipart/form-data"),
        (requests.get(f"{served.url}/v1/trace/{'0' * 32}", timeout=30), 404, "no trace '000"),
        (requests.get(f"{served.url}/v1/trace/.env", timeout=30), 404, "no trace '.env'"),
        (requests.get(f"{served.url}/v1/trace/..%2F..%2Fetc", timeout=30), 404, "Not Found"),
        (requests.get(f"{served.url}/v1/nothing", timeout=30), 404, "Not Found"),
    ]
    for response, status, fragment in cases:
        assert response.status_code == status, (fragment, response.text)
        assert response.headers["content-type"] == "application/json"
        assert fragment in response.json()["error"], response.json()
    assert list((served.out / "serve" / "uploads").iterdir()) == []


def test_16_concurrent_requests_are_all_answered(served):
    """Every other request asks for `max_turns` 1 (the config's budget), so a batch runs as
    two runner calls, one per option set; the answers must not depend on it."""
    prompts = [PAIRS[p][0] for p in PAIRS]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(
            lambda i: judge(served, timeout=300, prompt=prompts[i % 3],
                            options={"max_turns": 1} if i % 2 else {}), range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    answers = [r.json() for r in responses]
    assert len({a["trace_id"] for a in answers}) == 16
    by_prompt = {}  # greedy: the same request gets the same answer, whatever its batch
    for i, answer in enumerate(answers):
        by_prompt.setdefault(i % 3, []).append((answer["verdicts"], answer["trace"]["turns"]))
    assert all(all(x == group[0] for x in group) for group in by_prompt.values())


def test_served_verdicts_equal_the_offline_evaluation(served):
    from jobs.evaluate import EvalRun

    with ThreadPoolExecutor(3) as pool:  # concurrent, so they share a batch as offline
        served_answers = dict(zip(PAIRS, pool.map(
            lambda p: judge(served, prompt=PAIRS[p][0], video_a=f"{PAIRS[p][1]}_A.mp4",
                            video_b=f"{PAIRS[p][1]}_B.mp4").json(), PAIRS)))
    run = EvalRun(served.cfg, served.out / "eval")
    try:
        offline = {t["pair_id"]: Trajectory.from_dict(t) for t in run.episodes()}
    finally:
        run.shutdown()
    assert set(offline) == set(PAIRS)
    for pid, answer in served_answers.items():
        trajectory = offline[pid]
        assert answer["verdicts"] == {d: trajectory.verdicts.get(d) for d in DIMS}, pid
        assert answer["end_reason"] == trajectory.end_reason, pid
        assert answer["trace"] == trace_summary(trajectory), pid  # every turn's text and frame


def test_cli_serves_a_registered_model_as_a_second_app_until_ctrl_c(served, tiny_model_dir,
                                                                      tmp_path):
    """`vrt-ray serve CONFIG --model models:/NAME/1` in its own process: the tiny model is
    registered in an MLflow store first; the command joins this Ray as a second application
    beside the first, prints the URL, answers there, and on SIGINT takes its app down and exits
    0."""
    from mlflow.tracking import MlflowClient

    from vrt_ray.registry import register

    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(store)
    run = client.create_run(client.create_experiment(
        "serve-test", artifact_location=(tmp_path / "artifacts").as_uri())).info.run_id
    assert register(client, run, "tiny-serve", str(tiny_model_dir)) == "1"
    port = served.cfg.serve.port
    command = [sys.executable, "-m", "vrt_ray", "serve", "tiny_cpu", "--model",
               "models:/tiny-serve/1", f"tracking.uri={store}",
               f"ray.address={ray.get_runtime_context().gcs_address}",
               f"serve.port={port}", "serve.app_name=cli", "serve.route_prefix=/cli",
               f"serve.media_root={served.media}", f"output_dir={served.out}/cli",
               "serve.num_cpus=0.25"]
    log = open(tmp_path / "serve.log", "w")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log,
                               text=True, cwd=Path(__file__).parent.parent,
                               env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    try:
        lines = []  # a library may print a warning on stdout first
        while not lines or not lines[-1].startswith("serving the judge at"):
            lines.append(process.stdout.readline())
            assert lines[-1], f"vrt-ray serve ended: {lines}"
        assert lines[-1].startswith(f"serving the judge at http://127.0.0.1:{port}/cli "), lines
        health = requests.get(f"http://127.0.0.1:{port}/cli/healthz", timeout=30).json()
        assert health["model"] == {"source": "models:/tiny-serve/1", "version": "tiny-serve/1"}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=300) == 0  # the app's replicas stop gracefully first
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
        print((tmp_path / "serve.log").read_text()[-5000:])  # shown when the test fails
    assert requests.get(f"http://127.0.0.1:{port}/cli/healthz", timeout=30).status_code == 404
    assert requests.get(f"{served.url}/healthz", timeout=30).status_code == 200


def steer_replica(answer_text: str) -> None:
    """Make the replica's model write `answer_text` for the SCRIPTED prompt (the engine's own
    choice elsewhere), as the evaluation tests steer rollout workers."""
    import scripted

    ray.cloudpickle.register_pickle_by_value(scripted)

    def install(replica):
        judge = replica._replica_impl._user_callable_wrapper._callable.judge
        engine = judge.engine
        engine.logits_processors.append(scripted.ScriptedByPrompt(
            engine.processor.tokenizer, {SCRIPTED: [answer_text]}, others_free=True))

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith("SERVE_REPLICA::vrt-judge#")]
    assert len(names) == 1, names
    ray.get(ray.get_actor(names[0], namespace="serve").__ray_call__.remote(install))


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def chromium_with_driver():
    """Debian's chromium and its driver, installed with apt-get when missing."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium",
                   "chromium-driver"]
        done = subprocess.run(install, capture_output=True, text=True)
        if done.returncode:
            subprocess.run(["apt-get", "update"], capture_output=True)
            done = subprocess.run(install, capture_output=True, text=True)
        if done.returncode:
            pytest.skip("chromium is not installed and `apt-get install chromium "
                        f"chromium-driver` failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return shutil.which("chromium"), shutil.which("chromedriver")


def test_trace_page_in_headless_chromium(served, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    binary, driver_path = chromium_with_driver()
    steer_replica("<think>A follows the prompt</think><answer>" + json.dumps(ANSWER)
                  + "</answer>")
    response = judge(served, prompt=SCRIPTED, video_a="long_A.mp4", video_b="short_B.mp4")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["verdicts"] == ANSWER and answer["end_reason"] == "answer"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.set_page_load_timeout(60)
        browser.get(f"{served.url}/v1/trace/{answer['trace_id']}")
        images = browser.find_elements(By.TAG_NAME, "img")
        widths = browser.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert len(images) == len(widths) >= 4 and all(w > 0 for w in widths), widths
        rows = {}
        for row in browser.find_elements(By.XPATH, "//table[.//th[text()='verdict']]//tr")[1:]:
            cells = row.find_elements(By.TAG_NAME, "td")
            assert all(cell.is_displayed() for cell in cells)
            rows[cells[0].text] = cells[1].text
        assert rows == ANSWER
        assert SCRIPTED in browser.find_element(By.TAG_NAME, "body").text
    finally:
        browser.quit()
