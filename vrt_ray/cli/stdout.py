"""Commands whose stdout is one JSON object (the training stages' summaries, the benchmarks'
reports) keep everything else off it: `claim_stdout` points the process's file descriptor 1 at
stderr, so whatever Python, Ray's copies of its workers' output, DeepSpeed's import-time warning
or native code writes there lands on stderr, and returns a stream on the real stdout."""
import json
import os
import sys
from typing import TextIO


def claim_stdout() -> TextIO:
    """Call first thing in main(); returns the real stdout."""
    sys.stdout.flush()
    real = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return real


def emit(stream: TextIO, report: dict) -> None:
    stream.write(json.dumps(report, indent=2) + "\n")
    stream.flush()
