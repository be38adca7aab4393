"""Pull-request review: the report script on a tiny DVC repository of its own, and the workflow."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from PIL import Image

from scripts.pr_plots import axes, render_vega
from scripts.pr_report import data_table
from tests.conftest import ROOT, env_with_venv

SCRIPT = ROOT / "scripts" / "pr_report.py"
WORKFLOW = ROOT / ".github" / "workflows" / "pr.yml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A one-stage pipeline: a metric, a short curve, a long curve, a plot that never changes and
# an image, all derived from two params, so a param change moves each of them.
STEP = textwrap.dedent('''\
    import json, pathlib, yaml
    from PIL import Image
    params = yaml.safe_load(open("params.yaml"))
    lr, epochs = params["lr"], params["train"]["epochs"]
    out = pathlib.Path("metrics"); out.mkdir(exist_ok=True)
    (out / "score.json").write_text(json.dumps({"accuracy": round(0.5 + lr, 4), "loss": round(1 - lr, 4),
        "accuracy_low": round(0.45 + lr, 4), "accuracy_high": round(0.55 + lr, 4),   # intervals, as evaluate writes
        "loss_low": round(0.8 - lr, 4), "loss_high": round(1.2 - lr, 4)}))
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

    @classmethod
    def create(cls, path: Path) -> "TinyRepo":
        """A new git repository on branch main with DVC initialised in it."""
        repo = cls(path)
        repo.path.mkdir()
        repo.run("git", "init", "-q", "-b", "main")
        repo.run("git", "config", "user.email", "tests@example.com")
        repo.run("git", "config", "user.name", "tests")
        repo.dvc("init", "-q")
        return repo

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
    repo = TinyRepo.create(tmp_path_factory.mktemp("pr") / "repo")
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_each_changed_headline_metric_is_marked_beyond_or_within_noise(tiny_repo):
    """accuracy 0.6 [0.55, 0.65] -> 0.7 is beyond main's interval; loss 0.9 [0.7, 1.1] -> 0.8 within it."""
    metrics = section(tiny_repo.report("--base", "main").stdout, "Metrics")
    assert "2 of 2 headline metrics changed, 1 beyond noise" in metrics
    rows = table_rows(metrics)
    assert ["`metrics/score.json:accuracy`", "0.6", "[0.5500, 0.6500]", "0.7", "+0.1000", "**beyond noise**"] in rows
    assert ["`metrics/score.json:loss`", "0.9", "[0.7000, 1.1000]", "0.8", "-0.1000", "within noise"] in rows
    assert "_No headline metric changed (2 compared)._" in tiny_repo.report("--base", "change", "--head", "change").stdout


@pytest.mark.slow
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


@pytest.mark.slow
def test_an_unchanged_revision_says_so_and_the_html_is_rendered(tiny_repo, tmp_path):
    report = tiny_repo.report("--base", "change", "--head", "change", "--plots-dir", str(tmp_path / "html")).stdout
    assert "_No param changed._" in section(report, "Params")
    assert "_No metric changed._" in section(report, "Metrics")
    assert "_No plot changed._" in section(report, "Plots")
    assert (tmp_path / "html" / "index.html").is_file()


@pytest.mark.slow
def test_comparing_two_commits_needs_no_workspace(tiny_repo):
    report = tiny_repo.report("--base", "main", "--head", "change").stdout
    assert ["params.yaml", "lr", "0.1", "0.2"] in table_rows(section(report, "Params"))


@pytest.mark.slow
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
    pairs = [{"actual": "cat", "predicted": "cat" if i % 3 else "dog"} for i in range(20)]
    assert data_table(pairs, pairs[::-1], "main", "workspace") == ""   # long text rows: no empty table


def embedded_images(markdown: str) -> list[tuple[str, str]]:
    """(caption, link) of every markdown image, in order."""
    return re.findall(r"!\[([^\]]*)\]\(([^)\s]+)\)", markdown)


def plot_block(plots: str, name: str) -> str:
    """The part of the plots section about one plot: from its heading to the next one."""
    return plots.split(f"**`{name}`**", 1)[1].split("\n**`", 1)[0].split("\nUnchanged:", 1)[0]


@pytest.mark.slow
def test_each_changed_plot_is_embedded_as_a_real_png_and_unchanged_ones_are_not(tiny_repo, tmp_path):
    out = tmp_path / "report" / "pr-report.md"
    tiny_repo.report("--base", "main", "--out", str(out), "--plots-dir", str(tmp_path / "report" / "pr-plots"))
    plots = section(out.read_text(), "Plots")

    links = {name: [link for _, link in embedded_images(plot_block(plots, name))]
             for name in ("metrics/curve.csv", "metrics/long.csv", "metrics/picture.png")}
    assert links == {                          # one drawing per data plot, old and new for an image plot
        "metrics/curve.csv": ["pr-plots/metrics-curve-csv.png"],
        "metrics/long.csv": ["pr-plots/metrics-long-csv.png"],
        "metrics/picture.png": ["pr-plots/metrics-picture.old.png", "pr-plots/metrics-picture.new.png"],
    }
    assert len(embedded_images(plots)) == 4    # and nothing for metrics/static.csv, which did not change
    assert sorted(path.name for path in (tmp_path / "report" / "pr-plots").glob("*.png")) == sorted(
        Path(link).name for group in links.values() for link in group)
    every_link = [link for group in links.values() for link in group]
    for link in every_link:
        path = out.parent / link               # relative to the report, as cml comment update resolves it
        assert path.read_bytes().startswith(PNG_SIGNATURE), link
        with Image.open(path) as image:
            image.load()                       # decodes the whole file, not only the header
            assert image.format == "PNG"
            if "picture" not in link:
                assert image.width >= 300 and image.height >= 200   # a drawn chart, not a stub
    with Image.open(out.parent / links["metrics/picture.png"][0]) as old, Image.open(out.parent / links["metrics/picture.png"][1]) as new:
        assert old.convert("RGB").getpixel((0, 0)) == (25, 0, 0)   # the image plot at main: lr 0.1
        assert new.convert("RGB").getpixel((0, 0)) == (51, 0, 0)   # in the workspace: lr 0.2
    assert (tmp_path / "report" / "pr-plots" / "index.html").is_file()   # the HTML of every plot, still


@pytest.mark.slow
def test_the_drawings_are_reproducible_and_show_both_revisions(tiny_repo, tmp_path):
    for folder in ("a", "b"):
        tiny_repo.report("--base", "main", "--out", str(tmp_path / folder / "r.md"), "--plots-dir", str(tmp_path / folder / "p"))
    first, second = sorted((tmp_path / "a" / "p").glob("*.png")), sorted((tmp_path / "b" / "p").glob("*.png"))
    assert [p.name for p in first] == [p.name for p in second] and first
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))

    spec = {"encoding": {"x": {"field": "epoch", "type": "quantitative"}}, "layer": [{"mark": "line", "encoding": {"y": {"field": "loss", "type": "quantitative"}}}]}
    rows = [{"epoch": "0", "loss": "0.9"}, {"epoch": "1", "loss": "0.5"}]
    both = render_vega("curve", spec, rows, [{"epoch": "0", "loss": "0.8"}, {"epoch": "1", "loss": "0.3"}], "main", "workspace")
    assert both != render_vega("curve", spec, None, [{"epoch": "0", "loss": "0.8"}, {"epoch": "1", "loss": "0.3"}], "main", "workspace")


def test_the_axes_come_from_where_each_dvc_template_puts_them():
    linear = {"encoding": {"x": {"field": "step", "type": "quantitative"}},
              "layer": [{"encoding": {"y": {"field": "acc", "type": "quantitative"}}},
                        {"encoding": {"x": {"aggregate": "max", "field": "other"}}}]}
    assert (axes(linear)[0]["field"], axes(linear)[1]["field"]) == ("step", "acc")
    confusion = {"facet": {"column": {"field": "rev"}}, "spec": {"encoding": {
        "x": {"field": "actual", "type": "nominal"}, "y": {"field": "predicted", "type": "nominal"}}}}
    assert (axes(confusion)[0]["type"], axes(confusion)[1]["field"]) == ("nominal", "predicted")
    confusion_png = render_vega("confusion", confusion, [{"actual": "cat", "predicted": "cat"}],
                                [{"actual": "cat", "predicted": "dog"}], "main", "workspace")
    with Image.open(__import__("io").BytesIO(confusion_png)) as image:
        assert image.width > image.height      # two heatmaps side by side


# --- the workflow -----------------------------------------------------------------------------

def workflow_steps() -> list[dict]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    return job["steps"]


def step_index(steps: list[dict], predicate) -> int:
    matches = [i for i, step in enumerate(steps) if predicate(step)]
    assert len(matches) == 1, f"{len(matches)} steps match"
    return matches[0]


# The workflow's own shell steps, run on a two-stage pipeline with cached outputs: `prep` (param a)
# feeds `fit` (param b). main is pushed to a folder remote, and so is a run with b: 2.
PREP = 'import yaml, pathlib; pathlib.Path("prep.txt").write_text(str(yaml.safe_load(open("params.yaml"))["a"]) * 3)\n'
FIT = textwrap.dedent('''\
    import json, pathlib, yaml
    b = yaml.safe_load(open("params.yaml"))["b"]
    pathlib.Path("model.txt").write_text(pathlib.Path("prep.txt").read_text() + str(b))
    pathlib.Path("score.json").write_text(json.dumps({"score": b}))
''')
TWO_STAGES = textwrap.dedent('''\
    stages:
      prep:
        cmd: python prep.py
        deps: [prep.py]
        params: [a]
        outs: [prep.txt]
      fit:
        cmd: python fit.py
        deps: [fit.py, prep.txt]
        params: [b]
        outs: [model.txt]
        metrics:
          - score.json:
              cache: false
''')


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A bare origin with main (pushed to the folder remote) and two PR branches: b 2 (run and
    pushed by someone before) and b 3 (never run)."""
    root = tmp_path_factory.mktemp("team")
    store = root / "store"
    store.mkdir()
    origin = root / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    alice = TinyRepo.create(root / "alice")
    (alice.path / "prep.py").write_text(PREP)
    (alice.path / "fit.py").write_text(FIT)
    (alice.path / "dvc.yaml").write_text(TWO_STAGES)
    (alice.path / "params.yaml").write_text("a: 1\nb: 1\n")
    alice.dvc("repro", "-q")
    alice.commit("main")
    alice.run("git", "remote", "add", "origin", str(origin))
    alice.run("git", "push", "-q", "origin", "main")
    alice.dvc("remote", "add", "--local", "-d", "storage", str(store))
    alice.dvc("push", "--run-cache")
    (alice.path / "params.yaml").write_text("a: 1\nb: 2\n")
    alice.dvc("repro", "-q")
    alice.run(sys.executable, str(ROOT / "scripts" / "remote.py"), "push")   # the run-cache with what it wrote
    alice.run("git", "checkout", "-q", "--", ".")   # the PRs change params only; their dvc.lock is main's
    for branch, b in (("pr-known", 2), ("pr-new", 3)):
        alice.run("git", "checkout", "-q", "-B", branch, "main")
        (alice.path / "params.yaml").write_text(f"a: 1\nb: {b}\n")
        alice.commit(f"b: {b}")
        alice.run("git", "push", "-q", "origin", branch)
    return origin, store


def run_workflow_steps(clone: Path, remote_url: str) -> tuple[dict[str, str], str]:
    """Run the workflow's remote, restore and repro steps in ``clone`` as Actions would; (outputs, log)."""
    steps = workflow_steps()
    (clone / "scripts").symlink_to(ROOT / "scripts")        # the checkout's own scripts and library
    (clone / "lifecycle").symlink_to(ROOT / "lifecycle")
    outputs_file = clone.parent / f"{clone.name}.outputs"
    outputs_file.write_text("")
    env = {**env_with_venv(), "GITHUB_OUTPUT": str(outputs_file), "DVC_REMOTE_URL": remote_url}
    log = []
    outputs: dict[str, str] = {}
    first = step_index(steps, lambda s: s.get("id") == "remote")
    last = step_index(steps, lambda s: "dvc repro" in s.get("run", ""))
    for step in steps[first:last + 1]:
        if step.get("if") == "steps.remote.outputs.available == 'true'" and outputs.get("available") != "true":
            continue                           # as Actions evaluates the step's condition
        assert "run" in step and set(step.get("if", "steps.remote.outputs.available == 'true'").split()) <= {
            "steps.remote.outputs.available", "==", "'true'"}, f"the test cannot run step {step.get('name')}"
        result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=clone, check=False,
                                env={**env, "REMOTE_AVAILABLE": outputs.get("available", "")},
                                capture_output=True, text=True, timeout=300)
        log.append(f"## {step.get('name', step.get('id'))}\n{result.stdout}{result.stderr}")
        assert result.returncode == 0, log[-1]
        outputs = dict(line.split("=", 1) for line in outputs_file.read_text().splitlines() if "=" in line)
    return outputs, "\n".join(log)


@pytest.mark.slow
def test_the_workflow_steps_rerun_only_what_the_pull_request_changed(team, tmp_path):
    origin, store = team

    def clone(branch: str, folder: str | None = None) -> Path:
        path = tmp_path / (folder or branch)
        subprocess.run(["git", "clone", "-q", "-b", branch, str(origin), str(path)], check=True)
        return path

    known = clone("pr-known")                  # b: 2, which someone ran and pushed: nothing runs
    outputs, log = run_workflow_steps(known, str(store))
    assert outputs["available"] == "true"
    assert "Stage 'prep' didn't change, skipping" in log
    assert "Stage 'fit' is cached - skipping run" in log and "Running stage" not in log
    assert (known / "model.txt").read_text() == "1112"

    new = clone("pr-new")                      # b: 3, never run: fit runs on the restored prep.txt
    outputs, log = run_workflow_steps(new, str(store))
    assert "Stage 'prep' didn't change, skipping" in log
    assert "Running stage 'fit'" in log and "Running stage 'prep'" not in log
    assert (new / "model.txt").read_text() == "1113"

    lone = clone("pr-new", "no-remote")        # no remote configured: a notice, then every stage runs
    outputs, log = run_workflow_steps(lone, "")
    assert outputs["available"] == "false"
    assert "::notice title=No DVC remote::" in log
    assert "Running stage 'prep'" in log and "Running stage 'fit'" in log

    gone = clone("pr-new", "unreachable")      # a remote that does not answer: a warning, then every stage runs
    outputs, log = run_workflow_steps(gone, str(tmp_path / "not-mounted"))
    assert outputs["available"] == "false"
    assert "::warning title=DVC remote unreachable::" in log and "does not exist" in log
    assert "Running stage 'prep'" in log and not (tmp_path / "not-mounted").exists()
