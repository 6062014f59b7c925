"""`vrt-ray serve CONFIG --model DIR|URI`: the judge as a Ray Serve application (docs/serve.md).

`VideoJudge` replicas each load the model once with `Judge.load` and run requests through the
same episode runner as rollouts and `vrt-ray evaluate`, so a served greedy verdict equals the
offline one. Requests are checked first (vrt_ray/serve_requests.py: bad input is a 4xx JSON
`{"error": ...}`, never a 500), then gathered by `@serve.batch` into one runner call per batch.
Each answer's HTML trace page is written to disk for `GET /v1/trace/{id}`; uploaded videos are
deleted once their page is written. (No `from __future__ import annotations` here: FastAPI
reads the route signatures' types at run time.)
"""
import asyncio
import hashlib
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from omegaconf import DictConfig, OmegaConf
from ray import serve
from starlette.exceptions import HTTPException

from jobs.grpo import start_ray
from vrt_ray.registry import local_model_dir, parse_model_uri
from vrt_ray.serve_requests import (JudgeRequest, Limits, MultipartReader, RequestError,
                                    check_videos, parse_form, parse_json_body)

app = FastAPI(title="vrt-ray judge")


@app.exception_handler(RequestError)
async def _refused(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


@serve.deployment(name="VideoJudge")
@serve.ingress(app)
class VideoJudge:
    def __init__(self, cfg: dict, model_dir: str, model: Dict[str, str]):
        from vrt_ray.judge import Judge
        from vrt_ray.serve_results import TracePages

        self.cfg = OmegaConf.create(cfg)
        self.model = model
        self.judge = Judge.load(model_dir, self.cfg)
        self.limits = Limits.from_config(self.cfg)
        served = Path(self.cfg.output_dir) / "serve"
        self.pages = TracePages(served / "traces", self.cfg.serve.keep_traces)
        self.uploads = served / "uploads"
        self.run_batch.set_max_batch_size(self.cfg.serve.max_batch_size)
        self.run_batch.set_batch_wait_timeout_s(self.cfg.serve.batch_wait_s)

    @app.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok", "model": self.model}

    @app.post("/v1/judge")
    async def judge_request(self, request: Request) -> dict:
        from vrt_ray.report import render_html
        from vrt_ray.serve_results import judge_response

        started = time.perf_counter()
        trace_id = uuid.uuid4().hex
        folder = self.uploads / trace_id
        try:
            checked = await asyncio.to_thread(check_videos, await self._read(request, folder),
                                              self.limits.backend)
            trajectory = await self.run_batch((trace_id, checked))
            page = await asyncio.to_thread(render_html, [trajectory],
                                           prompts={trace_id: checked.prompt},
                                           title=f"trace {trace_id}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.pages.save(trace_id, page)
        return judge_response(trajectory, self.cfg.protocol.dimensions, trace_id, self.model,
                              1000 * (time.perf_counter() - started))

    @app.get("/v1/trace/{trace_id}", response_class=HTMLResponse)
    def trace(self, trace_id: str) -> HTMLResponse:
        return HTMLResponse(self.pages.load(trace_id))

    async def _read(self, request: Request, folder: Path) -> JudgeRequest:
        """The request from a JSON body (read up to its size limit) or a multipart form
        (uploads written into `folder` as they arrive)."""
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            reader = MultipartReader(kind, folder, self.limits)
            async for chunk in request.stream():
                reader.feed(chunk)
            return parse_form(*reader.close(), self.limits)
        if kind.split(";")[0].strip() != "application/json":
            raise RequestError(415, f"Content-Type {kind or '(none)'!r}: send application/json "
                                    "or multipart/form-data")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.limits.max_text_bytes:
                raise RequestError(413, f"JSON body over {self.limits.max_text_bytes} bytes "
                                        "(upload videos as multipart/form-data)")
        return parse_json_body(bytes(body), self.limits)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def run_batch(self, requests: List[Tuple[str, JudgeRequest]]) -> list:
        """One episode-runner call per distinct set of options in the batch (one in the usual
        case: every request greedy at the config's budgets), in a thread so the replica keeps
        reading requests meanwhile."""
        return await asyncio.to_thread(self._episodes, requests)

    def _episodes(self, requests: List[Tuple[str, JudgeRequest]]) -> list:
        from vrt_ray.episodes import EpisodeJob
        from vrt_ray.protocol import EpisodeInput

        out: list = [None] * len(requests)
        for options in dict.fromkeys(r.options for _, r in requests):
            chosen = [i for i, (_, r) in enumerate(requests) if r.options == options]
            jobs = [EpisodeJob(EpisodeInput(trace_id, r.prompt, r.videos, r.num_frames))
                    for trace_id, r in (requests[i] for i in chosen)]
            trajectories = self.judge.episodes(
                jobs, options.temperature, options.max_turns,
                max_batch=self.cfg.serve.max_batch_size)
            for i, trajectory in zip(chosen, trajectories):
                out[i] = trajectory
        return out


def resolve_model(source: str, tracking_uri: str) -> Tuple[str, Dict[str, str]]:
    """(local checkpoint directory, {"source", "version"}) for `--model`; the one place a
    model reference becomes a directory. A registry URI's version is NAME/VERSION; a
    directory's is a fingerprint of its files (names, sizes, modification times): it changes
    when the checkpoint is rewritten."""
    path = Path(local_model_dir(source, tracking_uri))
    if parse_model_uri(source):
        return str(path.resolve()), {"source": source, "version": f"{path.parent.name}/{path.name}"}
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return str(path.resolve()), {"source": source, "version": digest.hexdigest()[:12]}


def deployment_options(cfg: DictConfig) -> dict:
    """Replicas (fixed or autoscaled: one more when a replica holds over a batch of requests),
    resources and how many requests a replica holds (running or queued for a batch)."""
    s = cfg.serve
    options = {"ray_actor_options": {"num_cpus": s.num_cpus, "num_gpus": s.num_gpus},
               "max_ongoing_requests": s.max_ongoing_requests}
    if s.autoscaling:
        options["autoscaling_config"] = {"min_replicas": s.min_replicas,
                                         "max_replicas": s.max_replicas,
                                         "target_ongoing_requests": s.max_batch_size}
    else:
        options["num_replicas"] = s.num_replicas
    return options


def deploy(cfg: DictConfig, model: str) -> str:
    """Start (or join) Ray and Serve, run the judge application; returns its URL. Relative
    paths of the config resolve here, where the command runs, not in the replicas. On a
    cluster where Serve already runs, its HTTP host and port stay as they are."""
    model_dir, model_info = resolve_model(model, cfg.tracking.uri)
    media_root = str(Path(cfg.serve.media_root).resolve())
    cfg = OmegaConf.merge(cfg, {"output_dir": str(Path(cfg.output_dir).resolve()),
                                "serve": {"media_root": media_root}})
    start_ray(cfg)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    judge = VideoJudge.options(**deployment_options(cfg)).bind(
        OmegaConf.to_container(cfg, resolve=True), model_dir, model_info)
    serve.run(judge, name=cfg.serve.app_name, route_prefix=cfg.serve.route_prefix)
    return f"http://{cfg.serve.host}:{cfg.serve.port}{cfg.serve.route_prefix.rstrip('/')}"


def main(cfg: DictConfig, model: str) -> None:
    """Serve until Ctrl-C or SIGTERM, then take the application down. Both signals are handled
    and unblocked here: a process can inherit SIGINT ignored (started in the background by a
    script) or blocked (by a parent thread's signal mask)."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    url = deploy(cfg, model)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        print(f"serving the judge at {url} (POST /v1/judge, GET /healthz, GET /v1/trace/ID); "
              "Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        serve.delete(cfg.serve.app_name)
