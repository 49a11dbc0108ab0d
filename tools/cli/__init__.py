"""The `instructrec` command line: one module per command group, every command registered here by name.

``stack`` (prepare, run, precompute-preferences), ``data`` (prepare-data, build-index), ``models`` (export,
models), ``recommend``, ``evaluate`` (evaluate, evaluate-statements), ``train`` (train, fit-fusion) and the
benchmarks of ``tools/bench``. Heavy imports happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import typer

from tools.bench.cli import bench_command, serving_command
from tools.cli import data, evaluate, models, recommend, stack, train

app = typer.Typer(help="InstructRec serving suite: run the stack, call it, and build its assets.",
                  no_args_is_help=True, add_completion=False)

for name, command in (
    ("prepare", stack.prepare),
    ("run", stack.run),
    ("prepare-data", data.prepare_data),
    ("build-index", data.build_index_cmd),
    ("precompute-preferences", stack.precompute_preferences_cmd),
    ("export", models.export_cmd),
    ("models", models.models),
    ("recommend", recommend.recommend),
    ("evaluate", evaluate.evaluate),
    ("evaluate-statements", evaluate.evaluate_statements_cmd),
    ("train", train.train),
    ("fit-fusion", train.fit_fusion_cmd),
    ("bench", bench_command),
    ("bench-serving", serving_command),
):
    app.command(name)(command)
