"""Every command in the README's ``bash`` blocks is exercised: the 5-minute tour runs end to end
(tiny settings), single training runs train for real in a few steps, every Hydra command line
composes, and commands that cost minutes or need hardware we lack name the test that runs them.
A new README command that fits none of these fails ``test_every_readme_command_is_covered``."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mnist_lab.paths import CONFIG_DIR
from tests.helpers import ROOT, free_port, read_metrics, run_module, running_server, wait_for

README = ROOT / "README.md"
TOUR_HEADING = "## A 5-minute tour"
# Hydra entry points: module -> primary config.
HYDRA_CONFIGS = {
    "train": "train",
    "eval": "eval",
    "predict": "predict",
    "export": "export",
    "serve": "serve",
    "ensemble": "ensemble",
    "robustness": "robustness",
}
# Commands that take minutes, need a GPU, SLURM or a person, or are the suite itself: the test
# (in tests/) that runs the same thing, checked to exist.
COVERED_ELSEWHERE = {
    "make train": "test_train.py::test_make_train_reaches_98_percent",
    "make test-fast": "test_lint.py::test_make_test_fast_runs_the_unit_tests_by_layer",
    "make test": ".ci/run",  # CI runs exactly this
    "make lint": "test_lint.py::test_mypy_clean",
    "tensorboard --logdir": "test_readme.py::test_five_minute_tour_end_to_end",
    "mnist_lab.train --help": "test_train.py::test_config_prints_and_lists_groups",
    "mnist_lab.bench --help": "test_bench.py::test_help_lists_the_sub_benchmarks",
    "hydra/launcher=slurm --cfg hydra": "test_scale.py::test_slurm_launcher_composes",
    "-m model=mlp,lenet,cnn,resnet optimizer=sgd,adam": (
        "test_reports.py::test_report_ranks_the_four_jobs"
    ),
    "-m model=mlp,lenet,cnn,resnet,vit,rnn": (
        "test_model_families.py::test_the_sweep_trains_all_six_families_with_auto_per_family"
    ),
    "mnist_lab.bench zoo": "test_bench.py::test_zoo_table_has_every_column_per_preset",
    "mnist_lab.bench families": "test_bench.py::test_families_measure_what_auto_knows",
    "module.compile=true": (
        "test_model_families.py::test_a_compiled_run_resumes_evaluates_exports_and_serves"
    ),
    "mnist_lab.eval ckpt_path=logs/train": (
        "test_reports.py::test_eval_agrees_with_train_on_the_same_checkpoint"
    ),
    "images=[my_7.jpg,scans/]": "test_predict.py::test_predict_text_output_and_bad_files",
    "predict images=[my_digit.jpg]": (
        "test_predict.py::test_predict_and_serve_answer_with_the_shipped_model_without_a_ckpt_path"
    ),
    "mnist_lab.report": "test_reports.py::test_report_ranks_the_four_jobs",
    "mnist_lab.robustness ckpt_path=": (
        "test_robustness.py::test_robustness_report_for_a_run_and_its_onnx_export"
    ),
    "robustness=true": "test_robustness.py::test_eval_can_include_the_suite",
    "mnist_lab.bench augment robustness": (
        "test_bench.py::test_quick_augment_and_robustness_benchmarks"
    ),
    "mnist_lab.ensemble": "test_ensemble.py::test_ensemble_command_averages_probabilities",
    "mnist_lab.bench --quick": "test_bench.py::test_quick_bench_writes_a_complete_json",
    "mnist_lab.bench machine --out": (
        "test_bench_machine.py::test_bench_machine_reports_the_machine_and_what_auto_picks"
    ),
    "ONEDNN_MAX_CPU_ISA=AVX2 python -m mnist_lab.bench machine": (
        "test_bench_machine.py::test_an_avx2_only_cpu_reports_emulated_bf16_and_resolves_to_float32"
    ),
    "output=json": "test_predict.py::test_rendered_phone_photos_are_read",
    "mnist_lab.photos out=": "test_predict.py::test_rendered_phone_photos_are_read",
    "quantize=dynamic": "test_export.py::test_dynamic_quantization_reports_accuracy_change",
    "format=torchscript": (
        "test_export.py::test_torchscript_export_defaults_beside_the_checkpoint"
    ),
    "mnist_lab.serve ckpt_path=logs/train": "test_serve.py::test_health_names_the_model",
    "curl -F": "test_readme.py::test_five_minute_tour_end_to_end",
    "curl -H": "test_serve.py::test_predict_upload_and_json_agree_with_the_labels",
    "trainer=ddp_cpu model=cnn": "test_scale.py::test_ddp_writes_one_run_directory_from_rank_zero",
    "-m trainer=ddp_cpu": (
        "test_template_patterns.py::test_ddp_sweep_over_learning_rates_survives_a_failing_rank"
    ),
    "experiment=glob(*)": (
        "test_template_patterns.py::test_every_experiment_with_fast_dev_run_on_a_fresh_checkout"
    ),
    "hparams_search=optuna": (
        "test_template_patterns.py::test_optuna_sweep_of_ten_trials_with_five_random_start_up_trials"
    ),
    # trackers: a 4-job sweep logged to TensorBoard, MLflow and W&B, read back by their clients
    "logger=mlflow": "test_trackers.py::test_mlflow_only_run_keeps_its_curves_in_the_store",
    "mlflow ui --backend-store-uri": "test_trackers.py::test_mlflow_ui_serves_the_store",
    "logger=wandb": "test_trackers.py::test_wandb_offline_run_directory_holds_every_job",
    "wandb sync": "test_trackers.py::test_wandb_offline_run_directory_holds_every_job",
    "logger=[tensorboard,mlflow,wandb]": (
        "test_trackers.py::test_mlflow_search_runs_finds_every_job_with_its_metrics_params_and_checkpoint"
    ),
    "hydra/launcher=joblib": "test_scale.py::test_joblib_launcher_runs_jobs_in_parallel_workers",
    "torchrun --nproc_per_node": "test_scale.py::test_torchrun_shares_one_run_directory",
    # no GPU, no second node and no SLURM here: their overrides compose (test below), and the
    # same code paths run on the CPU in tests/test_scale.py
    "trainer=ddp trainer.devices=4": "test_scale.py::test_slurm_launcher_composes",
    "hydra/launcher=slurm hydra.launcher.partition": "test_scale.py::test_slurm_launcher_composes",
}
# Cheap commands run as they are.
RUN_AS_IS = ("--help", "--cfg")


def readme_commands(section: str | None = None) -> list[str]:
    """Shell commands of the README's bash blocks (continuations joined, comments dropped)."""
    text = README.read_text()
    if section:
        start = text.index(section)
        text = text[start : text.index("\n## ", start + len(section))]
    commands = []
    for lang, block in re.findall(r"^ *```(\w*)\n(.*?)^ *```", text, re.S | re.M):
        if lang != "bash":
            continue
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _module_args(command: str) -> tuple[str, list[str]] | None:
    """``... -m mnist_lab.NAME ARGS`` (also under torchrun/srun) -> (NAME, ARGS)."""
    words = shlex.split(command)
    for i, word in enumerate(words[:-1]):
        if word == "-m" and words[i + 1].startswith("mnist_lab."):
            return words[i + 1].split(".", 1)[1], words[i + 2 :]
    return None


def _covering_test(command: str) -> str | None:
    return next((t for key, t in COVERED_ELSEWHERE.items() if key in command), None)


CHEAP_COMMANDS = [
    c for c in readme_commands() if any(f in c.split() for f in RUN_AS_IS) and not _covering_test(c)
]


def _single_values(overrides: list[str]) -> list[str]:
    """A sweep's first job: ``model=mlp,lenet`` -> ``model=mlp`` (lists in [] stay whole);
    ``experiment=glob(*)`` -> the first option of the group it globs."""
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        if "," in value and not value.startswith("["):
            value = value.split(",")[0]
        if value == "glob(*)":
            value = sorted(p.stem for p in (Path(CONFIG_DIR) / key).glob("*.yaml"))[0]
        out.append(f"{key}={value}")
    return out


def _shortened(args: list[str], tiny: list[str]) -> list[str]:
    """The command's arguments with the ``tiny`` overrides replacing any of the same keys."""
    keys = {t.split("=")[0] for t in tiny}
    return [a for a in args if a.split("=")[0] not in keys] + tiny


def _compose(config: str, overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        compose(config_name=config, overrides=overrides, return_hydra_config=True)


def test_every_readme_command_is_covered():
    commands = readme_commands()
    assert len(commands) > 30
    tour = set(readme_commands(TOUR_HEADING))
    uncovered = []
    for command in commands:
        parsed = _module_args(command)
        covered = (
            command in tour
            or command == "source .venv/bin/activate"
            or (parsed and any(flag in parsed[1] for flag in RUN_AS_IS))
            or (parsed and parsed[0] == "train" and _trains_in_process(command))
            or _covering_test(command)
        )
        if not covered:
            uncovered.append(command)
    assert not uncovered, "README commands no test exercises:\n" + "\n".join(uncovered)
    assert CHEAP_COMMANDS, "no README --help/--cfg command for test_help_and_cfg_commands_run"
    for target in set(COVERED_ELSEWHERE.values()):
        if target == ".ci/run":
            assert "make test" in (ROOT / ".ci" / "run").read_text()
            continue
        path, name = target.split("::")
        files = list((ROOT / "tests").rglob(path))  # tests/unit/<layer>/ or tests/e2e/
        assert len(files) == 1, f"{target}: {len(files)} files named {path}"
        assert f"def {name}(" in files[0].read_text(), f"{target} does not exist"


def test_every_hydra_command_line_composes():
    """The overrides of every README command (first job of a sweep) compose: no typos."""
    checked = 0
    for command in readme_commands():
        parsed = _module_args(command)
        if not parsed or parsed[0] not in HYDRA_CONFIGS:
            continue
        args = [a for a in parsed[1] if not a.startswith("-")]
        if any(flag in parsed[1] for flag in RUN_AS_IS):
            continue
        # placeholders a reader replaces: <time> directories, $SHELL_VARIABLES
        args = [re.sub(r"<\w+>|\$\w+", "x1", a) for a in args]
        _compose(HYDRA_CONFIGS[parsed[0]], _single_values(args))
        checked += 1
    assert checked > 20


@pytest.mark.slow  # runs the commands
@pytest.mark.parametrize("command", CHEAP_COMMANDS)
def test_help_and_cfg_commands_run(command):
    module, args = _module_args(command)
    proc = run_module(f"mnist_lab.{module}", *args)
    assert proc.stdout.strip()


def _trains_in_process(command: str) -> bool:
    """Single CPU training runs outside the tour: cheap enough to train for real below."""
    parsed = _module_args(command)
    return (
        parsed is not None
        and parsed[0] == "train"
        and command.startswith("python -m")
        and "-m" not in parsed[1]
        and not any(f in parsed[1] for f in RUN_AS_IS)
        and not _covering_test(command)
        and command not in readme_commands(TOUR_HEADING)
    )


@pytest.mark.slow  # runs the commands
def test_single_training_commands_train_with_tiny_settings(tmp_path):
    """Each README training command, with a few batches: it trains, tests and writes metrics;
    the resume command continues the run before it (same directory)."""
    from mnist_lab.config import compose_train_config
    from mnist_lab.training.fit import train

    commands = [c for c in readme_commands() if _trains_in_process(c)]
    assert len(commands) >= 5
    for command in commands:
        args = [a for a in _module_args(command)[1] if not a.startswith("hydra.")]
        run_dir = re.search(r"hydra\.run\.dir=(\S+)", command)
        out = tmp_path / (run_dir.group(1) if run_dir else re.sub(r"\W+", "_", command)[-60:])
        tiny = [
            "debug=tiny",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "logger=none",
            "callbacks.figures=null",
        ]
        (out / "metrics.json").unlink(missing_ok=True)  # the resume command reuses a directory
        metrics = train(compose_train_config(_shortened(args, tiny), out))
        assert 0.0 <= metrics["test/acc"] <= 1.0 and (out / "metrics.json").is_file(), command


@pytest.mark.slow  # runs the commands
def test_five_minute_tour_end_to_end(tmp_path):
    """The tour's commands in order, as a newcomer types them (``logs/`` moved to a temp dir,
    training shortened): train, sweep, TensorBoard, eval, predict, export, serve + curl."""
    commands = readme_commands(TOUR_HEADING)
    assert commands[0] == "source .venv/bin/activate"
    assert Path(sys.executable).parent.joinpath("activate").is_file()  # we run inside a venv
    logs = tmp_path / "logs"
    fast = logs / "tour" / "fast"
    # the whole test set (not debug=tiny's 2 batches): eval must reproduce train's test/acc
    tiny = ["trainer.max_epochs=1", "trainer.limit_train_batches=150", "callbacks.figures=null"]
    done = []
    for command in commands[1:]:
        command = command.replace("logs/", f"{logs}/")
        if command.startswith("tensorboard"):
            _check_tensorboard(command)
            done.append("tensorboard")
            continue
        module, args = _module_args(command)
        done.append(module)
        if module == "serve":
            _check_server(args, logs)
            continue
        # paths.log_dir: where each command's own Hydra directory goes (not the repo's logs/)
        extra = [f"paths.log_dir={logs}"]
        command_args = _shortened(args, tiny) if module == "train" else args
        # cold=True: a real `python -m` from an empty interpreter, as the newcomer's shell starts it
        proc = run_module(f"mnist_lab.{module}", *command_args, *extra, cold=True)
        if module == "train" and "-m" in args:
            assert len(list((logs / "tour" / "sweep").glob("*/metrics.json"))) == 2
        elif module == "train":
            assert read_metrics(fast)["test/acc"] > 0.9
        elif module == "eval":
            assert "test/acc:" in proc.stdout and (fast / "eval" / "confusion_matrix.png").is_file()
            # the same weights (as validated) and the same number as train reported
            evaluated = json.loads((fast / "eval" / "metrics.json").read_text())
            assert evaluated["test/acc"] == pytest.approx(read_metrics(fast)["test/acc"], abs=1e-6)
        elif module == "predict":
            # "<path>: <digit>   top-3: ..." per drawing; at least 2 of the 3 right after a
            # short training run (the full preset reads all three)
            found = dict(re.findall(r"(\w+)\.jpg: (\d)", proc.stdout))
            assert set(found) == {"seven", "two", "four"}, proc.stdout
            right = sum(found[n] == d for n, d in [("seven", "7"), ("two", "2"), ("four", "4")])
            assert right >= 2, proc.stdout
        elif module == "export":
            assert (fast / "checkpoints" / "model.onnx").is_file()
    assert done == ["train", "train", "tensorboard", "eval", "predict", "export", "serve"]


def _check_tensorboard(command: str) -> None:
    """TensorBoard starts on the tour's logs and lists the run and both sweep jobs."""
    port = free_port()
    words = shlex.split(command)
    board = subprocess.Popen(
        [str(Path(sys.executable).parent / words[0]), *words[1:], "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # TensorBoard finds the runs in the background after it starts
            runs = wait_for(f"http://127.0.0.1:{port}/data/runs", board).json()
            if any("fast" in r for r in runs) and sum("sweep" in r for r in runs) == 2:
                break
            assert time.monotonic() < deadline, f"TensorBoard lists {runs}"
            time.sleep(0.5)
    finally:
        board.terminate()
        board.wait(10)


def _check_server(args: list[str], logs: Path) -> None:
    """The server starts on the exported model and answers the README's curl upload."""
    (ckpt,) = [a.split("=", 1)[1] for a in args if a.startswith("ckpt_path=")]
    with running_server(ckpt, f"paths.log_dir={logs}", cold=True) as url:
        curl = next(c for c in readme_commands() if c.startswith("curl -F"))
        curl = curl.replace("my_7.jpg", str(ROOT / "docs" / "images" / "digits" / "seven.jpg"))
        curl = curl.replace("http://127.0.0.1:8000", url)
        out = subprocess.run(shlex.split(curl), capture_output=True, text=True, check=True)
        answer = json.loads(out.stdout)
        assert len(answer["probabilities"]) == 10 and answer["digit"] in range(10)
