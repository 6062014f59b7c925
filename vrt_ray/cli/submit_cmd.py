"""`vrt-ray submit`: run a stage as a Ray job on a cluster (`JobSubmissionClient`), stream its
logs, and exit with the job's outcome."""
from __future__ import annotations

import argparse
import shlex
import sys
import time

JOB_STAGES = ("grpo", "warmup", "cold-start", "rft", "pipeline", "evaluate")
EXCLUDES = [".git", ".venv", ".venv-vllm", "outputs", "mlruns", ".hypothesis", ".pytest_cache",
            "**/__pycache__", "*.egg-info"]
NO_AGENT = "No available agent to submit job"  # Ray's answer until a new head's job agent is up
AGENT_WAIT_S = 120.0


def register(commands: argparse._SubParsersAction) -> None:
    submit = commands.add_parser(
        "submit", help="run a stage as a Ray job on a cluster and stream its logs",
        description="Submit `vrt-ray STAGE CONFIG key=value ...` to the cluster at --address "
                    "with this directory as the job's working dir; logs are streamed and the "
                    "exit code is 0 when the job SUCCEEDED, 1 otherwise.")
    submit.add_argument("--address", required=True, metavar="URL",
                        help="the cluster's dashboard address, e.g. http://head:8265")
    submit.add_argument("config", metavar="CONFIG", help="run config (path or name)")
    submit.add_argument("rest", nargs="*", metavar="[STAGE] key=value",
                        help=f"the job ({', '.join(JOB_STAGES)}; default grpo), then config "
                             "overrides")
    submit.add_argument("--working-dir", default=".", metavar="DIR",
                        help="uploaded as the job's working dir (default: here; .venv, .git and "
                             "outputs left out)")
    submit.add_argument("--pip", nargs="*", default=[], metavar="REQ",
                        help="extra pip requirements for the job's runtime env")
    submit.add_argument("--no-wait", action="store_true",
                        help="print the job id and return once it is submitted")
    submit.set_defaults(handler=_submit)


def split_stage(rest) -> tuple:
    """(stage, overrides) from what follows CONFIG: a first word without `=` names the stage."""
    if rest and "=" not in rest[0]:
        if rest[0] not in JOB_STAGES:
            from vrt_ray.cli import UserError

            raise UserError(f"unknown stage {rest[0]!r}; expected one of {', '.join(JOB_STAGES)}")
        return rest[0], list(rest[1:])
    return "grpo", list(rest)


def entrypoint(stage: str, config: str, overrides) -> str:
    return shlex.join(["vrt-ray", stage, config, *overrides])


def submit_when_ready(client, wait_s: float = AGENT_WAIT_S, **job) -> str:
    """`client.submit_job(**job)`, tried again every 2 s for up to `wait_s` while the cluster
    answers that no job agent is up yet (a head that has just started); the job id."""
    deadline, told = time.monotonic() + wait_s, False
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as exc:
            if NO_AGENT not in str(exc) or time.monotonic() >= deadline:
                raise
            if not told:
                print(f"the cluster's job agent is not up yet; trying for up to {wait_s:.0f} s",
                      file=sys.stderr)
                told = True
            time.sleep(2)


def _submit(args: argparse.Namespace) -> int:
    import asyncio

    from ray.job_submission import JobStatus, JobSubmissionClient

    from vrt_ray import config
    from vrt_ray.cli import UserError

    stage, overrides = split_stage(args.rest)
    config.load(args.config, overrides)  # a bad key fails here, not on the cluster
    try:
        client = JobSubmissionClient(args.address)
    except Exception as exc:  # connection refused, wrong URL
        raise UserError(f"cannot reach a Ray cluster at {args.address} "
                        f"({' '.join(str(exc).split())[:200]})") from None
    runtime_env = {"working_dir": args.working_dir, "excludes": EXCLUDES}
    if args.pip:
        runtime_env["pip"] = list(args.pip)
    job_id = submit_when_ready(client, entrypoint=entrypoint(stage, args.config, overrides),
                               runtime_env=runtime_env)
    print(f"submitted {job_id}", file=sys.stderr)
    if args.no_wait:
        print(job_id)
        return 0

    async def stream() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    asyncio.run(stream())
    status = client.get_job_status(job_id)
    print(f"job {job_id}: {status.value}", file=sys.stderr)
    return 0 if status == JobStatus.SUCCEEDED else 1
