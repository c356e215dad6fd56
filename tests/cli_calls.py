"""`petl-bench` called in-process with its output captured, as the CLI tests call it."""

import contextlib
import io

from petl_bench.cli import main


def call(argv) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured; -> (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def call_ok(argv) -> str:
    """main(argv), which must succeed; -> its stdout."""
    code, out, err = call(argv)
    assert code == 0, err
    return out


def tiny_run_argv(method: str, root, out, *extra, dataset: str = "folder") -> list[str]:
    """`run` of `method` on 2 shots with the tiny CLIP, no bars, no loader workers; `extra` appended."""
    argv = ["run", "--method", method, "--dataset", dataset, "--root", root, "--split", "2shot", "--model", "tiny"]
    return [*argv, "--out", out, "--no-progress", "--set", "data.num_workers=0", *extra]
