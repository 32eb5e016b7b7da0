"""Runs benchmarks/fresh_passages.py with the round-20 folded-match patch (FOLD env) applied."""

import runpy
import sys

sys.argv[0] = "/work/main/benchmarks/fresh_passages.py"
sys.path.insert(0, "/work/exp/r20")
import probe_fold  # noqa: E402,F401  (applies the patch)

runpy.run_path("/work/main/benchmarks/fresh_passages.py", run_name="__main__")
