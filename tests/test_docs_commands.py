"""Every shell command and Python example in README.md and docs/*.md runs, as written (issue 26).

The commands are found in the docs' fenced code blocks (``tests/helper_docs.py``), not listed
here: a command added to the docs is a new test, and it must pass. Each runs with bash in the root
of a temporary copy of the checkout (``Workspace``), so ``outputs/`` lands in the temporary folder,
offline, with ``OMP_NUM_THREADS=1``. Before any of them, the test writes what the docs assume a
user has: ``photos/*.jpg``, ``val/``, ``concepts/cars/``, ``$HOME/pets`` (train/val/test folders
of classes) and the example run folders they name (``outputs/2026-11-26/15-04-12`` ...: a real run
or sweep into that folder).

What cannot run as written here is listed once, in ``STAND_INS``: why, and what is checked
instead. Everything else must exit 0 without a traceback. Marked ``slow`` and ``docs`` (real runs,
trainings, sweeps, servers: ~15 min on an unloaded 2-core machine; ``-m "not docs"`` leaves them
out of a local run, CI runs them); the quick tests below check the extraction and the list itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helper_docs import (
    EXAMPLE_RUN,
    ROOT,
    Block,
    Command,
    Workspace,
    all_commands,
    blocks,
    python_blocks,
    serve_and_ask,
    shell_commands,
)
from test_launchers import ray_cluster  # noqa: F401 - the fixture, for the ray_cluster stand-in

TIMEOUT_S = 1200  # one command; the longest, the 5-training demo sweep, takes ~2-3 min on 2 cores


@dataclass(frozen=True)
class StandIn:
    """How a command the docs show is checked when it cannot run as written here.

    ``match`` is searched in the command as written. ``replace`` (a ``re.sub`` replacement; ``None``:
    the command runs as written) may use ``{free_port}`` and ``{ray_address}``. ``needs`` are
    fixtures set up first (``pretrained_cache``, ``cifar10``, ``ray_cluster``) or programs that
    must be installed (else skipped). ``then`` runs in the same shell afterwards, as a check
    (``{original}``: the command as written, ``{match}``: the part ``match`` found). ``server``: the
    command serves until stopped.
    """

    match: str
    why: str
    replace: str | None = None
    needs: tuple[str, ...] = ()
    then: str = ""
    server: bool = False


BENCH = (
    "a benchmark at full size takes minutes to an hour; its figures come from the lead's run on an "
    "idle machine (benchmarks/RESULTS.md): checked at the smallest size its options allow"
)

# The one list of commands that do not run exactly as written here. Keep it short; say why.
STAND_INS = [
    StandIn(
        r"^\./dev\.sh run",
        replace="python run.py",
        why="dev.sh first sets up .venv with `pip install -e`, which would reinstall vizpipe into the "
        "environment running these tests: `./dev.sh run X` is `.venv/bin/python run.py X` "
        "(test_dev_sh_is_what_the_stand_ins_say checks dev.sh's lines)",
    ),
    StandIn(
        r"^\./dev\.sh test(?P<args>.*)$",
        replace=r"python -m pytest\g<args> --collect-only -q",
        why="it is this test suite (CI runs it, .ci/run): run from inside, it would recurse; "
        "its tests are collected instead (lint runs in CI)",
    ),
    StandIn(
        r"^source \.venv/bin/activate$",
        then='test "$(command -v python)" -ef .venv/bin/python',
        why="changes only the shell it runs in: runs as written, then `python` must be .venv's",
    ),
    StandIn(
        r'^eval "\$\(python run\.py -sc install=bash\)"$',
        then="complete -p python",
        why="eval succeeds on an empty script: runs as written, then bash must complete `python`",
    ),
    StandIn(
        r"model\.weights=DEFAULT",
        needs=("pretrained_cache",),
        why="pretrained weights come from the model hub (offline here): TORCH_HOME holds a random-init "
        "state dict under the pretrained file's name, found by torchvision's loader in its cache; "
        "the command runs as written",
    ),
    StandIn(
        r"input=cifar10\b.*input\.download=true",
        needs=("cifar10",),
        why="CIFAR-10's host is offline here: data/ holds a tiny CIFAR-10 in its own format, written by "
        "the test, and torchvision's checksums are those of its files (a sitecustomize on "
        "PYTHONPATH), so the download finds it verified; the command runs as written",
    ),
    StandIn(
        r"hydra/launcher=slurm(?: hydra\.launcher\.\w+=\S+)*",
        replace="hydra/launcher=submitit_local",
        then="python run.py {match} --cfg hydra -p hydra.launcher",
        needs=("hydra_plugins.hydra_submitit_launcher",),
        why="needs a Slurm cluster: run under submitit_local (the same plugin, jobs as local "
        "processes) without the Slurm-only keys; its Slurm part must compose (--cfg hydra)",
    ),
    StandIn(
        r"ray://HEAD:10001",
        replace="{ray_address}",
        needs=("ray_cluster",),
        why="needs a running Ray cluster: a local one started by the test, as tests/test_launchers.py does",
    ),
    StandIn(
        r"hydra/launcher=ray\b",
        needs=("hydra_plugins.hydra_ray_launcher",),
        why="runs as written (Ray starts an instance on this machine); skipped without the cluster extra",
    ),
    StandIn(r"^tensorboard\b", server=True, why="a server: started as written, asked for its runs, stopped"),
    StandIn(r"--port \d+", replace="--port {free_port}", why="the port may be taken on this shared machine"),
    StandIn(
        r"^ssh (.*)$",
        replace=r"ssh -G \1",
        needs=("ssh",),
        why="needs a remote server: `ssh -G` reads the same options and prints the configuration it "
        "would connect with, without connecting",
    ),
    StandIn(
        r"^python scripts/screenshot\.py",
        needs=("chromium",),
        why="needs Chromium (apt-get install chromium)",
    ),
    StandIn(r"-m benchmarks\.render$", replace=r"\g<0> --repeats 1", why=BENCH),
    StandIn(
        r"-m benchmarks\.cam$", replace=r"\g<0> --repeats 1 --models resnet18 --batch 2 --size 64", why=BENCH
    ),
    StandIn(r"-m benchmarks\.train$", replace=r"\g<0> --repeats 1 --epochs 1 --train 64 --val 32", why=BENCH),
    StandIn(r"-m benchmarks\.sweep$", replace=r"\g<0> --repeats 1 --no-separate", why=BENCH),
    StandIn(r"-m benchmarks\.dataset$", replace=r"\g<0> --images 8 --small 4 --big 16", why=BENCH),
    StandIn(r"-m benchmarks\.coldstart$", replace=r"\g<0> --repeats 1", why=BENCH),
    StandIn(
        r"-m benchmarks\.resume$", replace=r"\g<0> --images 20 --size 64 --batch 5 --repeats 1", why=BENCH
    ),
    StandIn(
        r"-m benchmarks\.reproducible$",
        replace=r"\g<0> --pairs 1 --repeats 1 --only 'shapes_net train'",
        why=BENCH,
    ),
    StandIn(r"-m benchmarks\.throughput$", replace=r"\g<0> --images 16 --small 0 --batch 8", why=BENCH),
    StandIn(r"-m benchmarks\.inspect$", replace=r"\g<0> --repeats 1 --batch 2 --size 64", why=BENCH),
    StandIn(r"-m benchmarks\.blocks$", replace=r"\g<0> --repeats 1 --models resnet18", why=BENCH),
    StandIn(
        r"-m benchmarks\.explanations$",
        replace=r"\g<0> --images 2 --repeats 1 --sweep none",
        why=BENCH + " (its sweep part is the explanations sweep's own stand-in below)",
    ),
    StandIn(
        r"^python run\.py -m experiment=shapes_demo sweep=explanations$",
        replace=r"\g<0> cam.method=gradcam,saliency,sobel cam.layer=conv2,conv3 input.limit=8 "
        "input.train_count=256 input.val_count=64 train.epochs=1 cam.sanity_images=2",
        why="the whole sweep (54 jobs, two 5-epoch trainings on 3000 images, 64 images scored and "
        "sanity-checked per job) takes many minutes on 2 cores: the same sweep file, experiment and "
        "stages on 3 methods (a CAM, a captum attribution, a baseline) x 2 layers, one short "
        "training, 8 images (tests/test_attribution.py checks every method against captum, "
        "tests/test_explanations.py the sweep end to end)",
    ),
    StandIn(
        r"(-m benchmarks\.mutation) (?:sample|run)\b.*$",
        replace=r"\1 --help",
        why="hours of mutmut (not in CI, as the README says): its command line is checked with --help",
    ),
]


def stand_ins(text: str) -> list[StandIn]:
    return [s for s in STAND_INS if re.search(s.match, text)]


COMMANDS = all_commands()


# =========================================================================== quick: the harness


def test_commands_are_found_in_every_doc():
    docs = {w.split(":")[0] for c in COMMANDS for w in c.where}
    assert {"README.md", "docs/tensorboard.md"} <= docs
    texts = [c.text for c in COMMANDS]
    assert "./dev.sh run" in texts and "./dev.sh test" in texts  # the quick start, first
    assert texts.index("./dev.sh run") == 0
    assert all("\n" not in t and not t.startswith("#") for t in texts)


def test_extraction_joins_continuations_and_drops_comments_and_prompts():
    text = "# a comment\npython run.py -m a=1 \\\n    b=2   # why\n\necho '# not a comment'  # but this is\n"
    assert shell_commands(Block("x.md", 10, "bash", text)) == [
        (11, "python run.py -m a=1 b=2"),
        (14, "echo '# not a comment'"),
    ]
    console = "$ python run.py\nvizpipe: run folder x\n$ ls \\\n  outputs\n"
    assert shell_commands(Block("x.md", 1, "console", console)) == [(1, "python run.py"), (3, "ls outputs")]


def test_blocks_keep_language_and_nested_fences(tmp_path, monkeypatch):
    import helper_docs

    monkeypatch.setattr(helper_docs, "ROOT", tmp_path)
    doc = tmp_path / "a.md"
    doc.write_text("text\n````markdown\n```bash\nnot run\n```\n````\n```python\nprint(1)\n```\n")
    assert [(b.lang, b.line, b.text) for b in blocks(doc)] == [
        ("markdown", 3, "```bash\nnot run\n```"),
        ("python", 8, "print(1)"),
    ]


def test_every_stand_in_is_used_and_says_why():
    """A stand-in no command matches any more is stale: remove it with the command."""
    for s in STAND_INS:
        assert len(s.why) > 20, s
        assert any(re.search(s.match, c.text) for c in COMMANDS), (
            f"no command in the docs matches {s.match!r}"
        )


def test_dev_sh_is_what_the_stand_ins_say():
    """./dev.sh run X is .venv/bin/python run.py X; ./dev.sh test X is pytest X (after setup and lint)."""
    script = (ROOT / "dev.sh").read_text()
    assert 'exec .venv/bin/python run.py "$@"' in script
    assert 'exec .venv/bin/python -m pytest "$@"' in script
    assert "./dev.sh test" in (ROOT / ".ci" / "run").read_text()


# =========================================================================== slow: the commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_images(folder: Path, count: int, size: int = 64, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"img_{i}.jpg")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    """The copy, with the data and example run folders the docs name."""
    ws = Workspace(tmp_path_factory.mktemp("docs") / "vizpipe")
    _write_images(ws.root / "photos", 2)
    _write_images(ws.root / "val", 4, seed=1)
    _write_images(ws.root / "concepts" / "cars", 2, seed=2)  # cam.concept=concepts/cars/
    for k, name in enumerate(("cat", "dog", "fish")):  # ~/pets with its own splits: small, quick to train
        for j, (split, count) in enumerate((("train", 2), ("val", 1), ("test", 1))):
            _write_images(ws.home / "pets" / split / name, count, seed=10 * k + j)
    named = {m for c in COMMANDS for m in EXAMPLE_RUN.findall(c.text)}
    named |= {m for b in python_blocks() for m in EXAMPLE_RUN.findall(b.text)}
    for folder in sorted(named):
        if folder.startswith("outputs/multirun/"):
            args = "-m seed=0,1 'stages=[summary,tensorboard]' input=random 'input.shape=[1,3,64,64]'"
            out = ws.shell(f"python run.py {args} hydra.sweep.dir={folder}", timeout=TIMEOUT_S)
        else:  # a run with a TensorBoard log (what the docs do with these folders needs no more)
            out = ws.shell(
                f"python run.py 'stages=[summary,tensorboard]' hydra.run.dir={folder}", timeout=TIMEOUT_S
            )
        assert out.returncode == 0, out.stderr[-3000:]
    return ws


def _pretrained_cache(ws: Workspace, text: str) -> None:
    """A random-init state dict where torchvision's loader looks for the model's pretrained file."""
    import torch
    import torchvision

    name = re.search(r"model\.name=(\w+)", text) or re.search(r"model=(\w+)", text)
    arch = name.group(1) if name else "resnet18"
    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except ValueError:
        pytest.fail(f"{arch}: not a torchvision model; teach _pretrained_cache where its weights live")
    target = Path(ws.env()["TORCH_HOME"]) / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = torchvision.models.get_model(arch, weights=None, num_classes=len(weights.meta["categories"]))
        torch.save(model.state_dict(), target)


def _cifar10(ws: Workspace, text: str) -> tuple[Path, dict[str, str]]:
    """A tiny CIFAR-10 in input.root, and a sitecustomize giving torchvision its files' checksums."""
    from test_datasets import write_cifar

    root = ws.root / re.search(r"input\.root=(\S+)", text).group(1)
    folder = root / "cifar-10-batches-py"
    if not folder.exists():
        write_cifar(root)
    sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    site = ws.root / ".sitecustomize"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import json, os\n"
        "from torchvision.datasets import CIFAR10\n"
        "sums = json.loads(os.environ['VIZPIPE_TEST_CIFAR_MD5'])\n"
        "CIFAR10.train_list = [[n, sums[n]] for n, _ in CIFAR10.train_list]\n"
        "CIFAR10.test_list = [[n, sums[n]] for n, _ in CIFAR10.test_list]\n"
        "CIFAR10.meta = {**CIFAR10.meta, 'md5': sums['batches.meta']}\n"
    )
    return site, {"VIZPIPE_TEST_CIFAR_MD5": json.dumps(sums)}


def _prepare(
    ws: Workspace, command: Command, request: pytest.FixtureRequest
) -> tuple[str, dict[str, str], list[StandIn]]:
    """The command as it runs here (after its stand-ins), its environment, and the stand-ins used."""
    used = stand_ins(command.text)
    if ".venv/" in command.text and ws.venv is None:
        pytest.skip("the tests do not run in a virtual environment: no .venv to link into the copy")
    extra: dict[str, str] = {}
    site: Path | None = None
    fill = {"{free_port}": str(_free_port()), "{ray_address}": ""}
    for s in used:
        for need in s.needs:
            if need == "pretrained_cache":
                _pretrained_cache(ws, command.text)
            elif need == "cifar10":
                site, more = _cifar10(ws, command.text)
                extra.update(more)
            elif need == "ray_cluster":
                address, ray_env = request.getfixturevalue("ray_cluster")
                fill["{ray_address}"] = address
                extra["RAY_AUTH_MODE"] = ray_env["RAY_AUTH_MODE"]
            elif "." in need:
                pytest.importorskip(
                    need, reason=f"needs the cluster extra (pip install -e '.[cluster]'): {need}"
                )
            elif shutil.which(need) is None:
                pytest.skip(f"needs {need} on PATH")
    text = command.text
    for s in used:
        if s.replace is not None:
            replacement = s.replace
            for key, value in fill.items():
                replacement = replacement.replace(key, value)
            text = re.sub(s.match, replacement, text)
    return text, ws.env(site, **extra), used


def _then(s: StandIn, original: str) -> str:
    """The stand-in's check: ``{original}`` the command as written, ``{match}`` what ``match`` found."""
    found = re.search(s.match, original)
    return s.then.replace("{original}", original).replace("{match}", found.group(0) if found else "")


@pytest.mark.slow
@pytest.mark.docs
@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_command_runs(command: Command, ws: Workspace, request: pytest.FixtureRequest) -> None:
    text, env, used = _prepare(ws, command, request)
    where = ", ".join(command.where)
    if any(s.server for s in used):
        _, body = serve_and_ask(ws, text, "/data/runs", env=env)
        assert json.loads(body), f"{where}: {text!r} serves no runs"
        return
    checks = [_then(s, command.text) for s in used if s.then]
    started = time.monotonic()
    out = ws.shell("\n".join([text, *checks]), timeout=TIMEOUT_S, env=env)
    took = time.monotonic() - started
    tail = out.stderr[-4000:]
    assert out.returncode == 0, f"{where}: {text!r} exited {out.returncode} ({took:.0f} s)\n{tail}"
    assert "Traceback (most recent call last)" not in out.stderr, f"{where}: {text!r}\n{tail}"


PY_BLOCKS = python_blocks()


@pytest.mark.slow
@pytest.mark.docs
@pytest.mark.parametrize("block", PY_BLOCKS, ids=[f"{b.doc}:{b.line}" for b in PY_BLOCKS])
def test_python_example_runs(block: Block, ws: Workspace) -> None:
    """Each ```python block, as a script in its own process, from the copy's root."""
    script = ws.root / f".example_{block.doc.replace('/', '_')}_{block.line}.py"
    script.write_text(block.text + "\n")
    out = ws.shell(f"python {script.name}", timeout=TIMEOUT_S)
    assert out.returncode == 0, f"{block.doc}:{block.line}\n{out.stderr[-4000:]}"
