"""Pull-request review: the report script on a tiny DVC repository of its own, and the workflow."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from scripts.pr_report import data_table
from tests.conftest import ROOT, env_with_venv

SCRIPT = ROOT / "scripts" / "pr_report.py"

# A one-stage pipeline: a metric, a short curve, a long curve, a plot that never changes and
# an image, all derived from two params, so a param change moves each of them.
STEP = textwrap.dedent('''\
    import json, pathlib, yaml
    from PIL import Image
    params = yaml.safe_load(open("params.yaml"))
    lr, epochs = params["lr"], params["train"]["epochs"]
    out = pathlib.Path("metrics"); out.mkdir(exist_ok=True)
    (out / "score.json").write_text(json.dumps({"accuracy": round(0.5 + lr, 4), "loss": round(1 - lr, 4)}))
    (out / "curve.csv").write_text("epoch,loss\\n" + "".join(f"{e},{round((1 - lr) / (e + 1), 4)}\\n" for e in range(epochs)))
    (out / "long.csv").write_text("step,value\\n" + "".join(f"{s},{round(lr * s, 4)}\\n" for s in range(30)))
    (out / "static.csv").write_text("x,y\\n0,1\\n1,2\\n")
    Image.new("RGB", (4, 4), (int(lr * 255), 0, 0)).save(out / "picture.png")
''')

DVC_YAML = textwrap.dedent('''\
    stages:
      step:
        cmd: python step.py
        deps: [step.py]
        params: [lr, train.epochs]
        metrics:
          - metrics/score.json:
              cache: false
        plots:
          - metrics/curve.csv:
              cache: false
              x: epoch
              y: loss
          - metrics/long.csv:
              cache: false
              x: step
              y: value
          - metrics/static.csv:
              cache: false
          - metrics/picture.png:
              cache: false
''')


class TinyRepo:
    def __init__(self, path: Path) -> None:
        self.path = path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(list(args), cwd=self.path, env=env_with_venv(), capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def dvc(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args)

    def write_params(self, lr: float, epochs: int) -> None:
        (self.path / "params.yaml").write_text(f"lr: {lr}  # learning rate\ntrain:\n  epochs: {epochs}\n")

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", message)

    def report(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, str(SCRIPT), *args, check=check)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> TinyRepo:
    """main: lr 0.1, 3 epochs; branch `change` on top of it: lr 0.2, 4 epochs, reproduced and committed."""
    repo = TinyRepo(tmp_path_factory.mktemp("pr") / "repo")
    repo.path.mkdir()
    repo.run("git", "init", "-q", "-b", "main")
    repo.run("git", "config", "user.email", "tests@example.com")
    repo.run("git", "config", "user.name", "tests")
    repo.dvc("init", "-q")
    (repo.path / "step.py").write_text(STEP)
    (repo.path / "dvc.yaml").write_text(DVC_YAML)
    repo.write_params(0.1, 3)
    repo.dvc("repro", "-q")
    repo.commit("first")
    repo.run("git", "checkout", "-q", "-b", "change")
    repo.write_params(0.2, 4)
    repo.dvc("repro", "-q")
    repo.commit("second: lr 0.2, four epochs")
    return repo


def section(report: str, title: str) -> str:
    return report.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]


def table_rows(markdown: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("|")]


def test_the_report_holds_the_params_and_metrics_diffs_with_old_and_new_values(tiny_repo):
    out = tiny_repo.path.parent / "report.md"
    tiny_repo.report("--base", "main", "--out", str(out))
    report = out.read_text()

    assert report.startswith("<!-- dvc-pr-report -->")
    params = table_rows(section(report, "Params"))
    assert ["params.yaml", "lr", "0.1", "0.2"] in params
    assert ["params.yaml", "train.epochs", "3", "4"] in params
    metrics = table_rows(section(report, "Metrics"))
    assert ["metrics/score.json", "accuracy", "0.6", "0.7", "0.1"] in metrics
    assert ["metrics/score.json", "loss", "0.9", "0.8", "-0.1"] in metrics
    assert "`workspace`" in report and "`main`" in report


def test_the_report_lists_the_changed_plots_with_what_moved(tiny_repo):
    report = tiny_repo.report("--base", "main", "--plots-url", "https://ci.example/run/1").stdout
    plots = section(report, "Plots")

    assert "3 of 4 plots changed" in plots
    curve = plots.split("**`metrics/curve.csv`** (data changed)", 1)[1].split("**", 1)[0]
    rows = table_rows(curve)
    assert rows[0] == ["epoch", "loss"]
    assert ["0", "0.9 → 0.8"] in rows and ["2", "0.3 → 0.2667"] in rows
    assert ["- → 3", "- → 0.2"] in rows                    # the epoch the change added
    long = plots.split("**`metrics/long.csv`** (data changed)", 1)[1].split("**", 1)[0]
    assert ["`value`", "30 → 30", "2.9 → 5.8", "0", "2.9 → 5.8"] in table_rows(long)  # long data: summarised
    assert "**`metrics/picture.png`** (image changed)" in plots
    assert "Unchanged: `metrics/static.csv`." in plots
    assert "(https://ci.example/run/1)" in plots


def test_an_unchanged_revision_says_so_and_the_html_is_rendered(tiny_repo, tmp_path):
    report = tiny_repo.report("--base", "change", "--head", "change", "--plots-dir", str(tmp_path / "html")).stdout
    assert "_No param changed._" in section(report, "Params")
    assert "_No metric changed._" in section(report, "Metrics")
    assert "_No plot changed._" in section(report, "Plots")
    assert (tmp_path / "html" / "index.html").is_file()


def test_comparing_two_commits_needs_no_workspace(tiny_repo):
    report = tiny_repo.report("--base", "main", "--head", "change").stdout
    assert ["params.yaml", "lr", "0.1", "0.2"] in table_rows(section(report, "Params"))


def test_an_unknown_base_is_one_sentence_and_exit_2(tiny_repo):
    result = tiny_repo.report("--base", "origin/nowhere", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: 'origin/nowhere' is not a commit of the repository")
    assert "fetch-depth: 0" in result.stderr and "Traceback" not in result.stderr


def test_data_table_rows_and_summaries():
    old = [{"epoch": "0", "loss": "0.5"}, {"epoch": "1", "loss": "0.25"}]
    new = [{"epoch": "0", "loss": "0.5"}, {"epoch": "1", "loss": "0.2"}]
    assert table_rows(data_table(old, new, "main", "workspace")) == [
        ["epoch", "loss"], ["---", "---"], ["0", "0.5"], ["1", "0.25 → 0.2"],
    ]
    assert table_rows(data_table([], new, "main", "workspace"))[3] == ["1", "0.2"]  # an added plot: no arrows
    long_old = [{"step": str(i), "acc": str(i / 100), "tag": "x"} for i in range(20)]
    long_new = [{"step": str(i), "acc": str(i / 50), "tag": "x"} for i in range(20)]
    summary = table_rows(data_table(long_old, long_new, "main", "workspace"))
    assert summary[0] == ["column", "rows", "last", "lowest", "highest"]
    assert ["`acc`", "20 → 20", "0.19 → 0.38", "0", "0.19 → 0.38"] in summary
    assert [row[0] for row in summary[2:]] == ["`acc`"]  # neither text nor unchanged columns are summarised


def test_the_workflow_runs_the_pipeline_and_posts_the_report():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pr.yml").read_text())
    trigger = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in trigger
    assert workflow["permissions"]["pull-requests"] == "write"
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert python["with"]["python-version"] == "3.11"
    commands = "\n".join(s.get("run", "") for s in steps)
    assert "pip install -r requirements.txt" in commands
    assert commands.index("dvc repro") < commands.index("scripts/pr_report.py --base")
    assert '--base "$BASE"' in commands and "origin/${{ github.base_ref }}" in str(steps)
    post = steps[-1]
    assert post["uses"].startswith("actions/github-script@") and "pr-report.md" in post["with"]["script"]
    assert "<!-- dvc-pr-report -->" in post["with"]["script"]
