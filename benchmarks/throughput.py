"""Training and inference speed and peak training memory of our model vs the PyTorch reference.

  python benchmarks/throughput.py [--variant=lite0] [--batch=32] [--resolution=224]
      [--dtypes=float32,bfloat16] [--rounds=5] [--repeats=5] [--plain_loop]
      [--output=results.json] [--markdown=table.md]

Every measurement runs in fresh processes, one per framework and round, alternating ours
and theirs for `--rounds` rounds, so that drift in the machine hits both alike and each
framework runs under its own best process settings:
- ours: `effnetlite.configure_process()` first thing, as the commands and the README's
  first code block do (glibc tunables: blocks >= 64 MiB on transparent huge pages);
- theirs: `efficientnet-lite-pytorch`, channels_last, threads = cores, RMSprop, inference
  under `torch.inference_mode`, bfloat16 through `torch.autocast` (AMP; on GPU with cuDNN's
  autotuner), under `allocator.HEAP_ON_HUGE_PAGES` (one arena, no mmap, no trimming, huge
  pages: PyTorch's fastest of the settings tried, benchmarks/README.md);
- `--plain_loop` adds a third process per round: a researcher's own loop
  (`create_model` + `module.apply` + optax) without `configure_process()`.
Each process times `--repeats` calls of the training step and of inference (batch and 1)
after `--warmup` untimed ones, and reports its peak memory after training float32 (the
resident set's peak on CPU, the allocator's device peak on a GPU) and its page faults per
training step. A round's speed is the median of its calls; the table gives the median over
rounds, the per-round ratios and model FLOP utilisation (img/s x 6 x MACs for training,
2 x MACs for inference) as a fraction of a matmul peak measured here on CPU, the published
dense peak on H100/H200.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import _common
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from effnetlite import config as config_lib
from effnetlite.data.preprocessing import normalize
from effnetlite.nn import backend, costs
from effnetlite.utils import allocator, cli
from effnetlite.utils.files import write_atomically

_VARIANT = flags.DEFINE_enum("variant", "lite0", list(config_lib.VARIANTS), "Model variant.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size.", lower_bound=1)
_RESOLUTION = flags.DEFINE_integer("resolution", 0, "Input side (0: the variant's).",
                                   lower_bound=0)
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"],
                            "Compute dtypes (float32, bfloat16), each timed in this run.")
flags.register_validator("dtypes", lambda values: bool(values) and set(values) <= {
    "float32", "bfloat16"}, "--dtypes takes float32 and/or bfloat16, e.g. float32,bfloat16")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per function.", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls first.", lower_bound=0)
_NO_TORCH = flags.DEFINE_bool("no_torch", False, "Time ours only.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds of fresh processes, one per framework.",
                               lower_bound=1)
_PLAIN_LOOP = flags.DEFINE_bool("plain_loop", False, "Also time a plain loop (create_model + "
                                "apply + optax) without configure_process(), each round.")
_CHILD = flags.DEFINE_enum("child", None, ["ours", "theirs", "plain"],
                           "Internal: be one measuring process.")
_OUTPUT = cli.DEFINE_path("output", "", "Write the results here as JSON.")
_MARKDOWN = cli.DEFINE_path("markdown", "", "Write the table here.")


# Dense matmul peaks published for accelerators (FLOP/s): NVIDIA's H100/H200 SXM data
# sheets, tensor cores without sparsity (float32 runs as TF32, XLA:GPU's default).
PUBLISHED_PEAK_FLOPS = {"H100": {"bfloat16": 989.4e12, "float32": 494.7e12},
                        "H200": {"bfloat16": 989.4e12, "float32": 494.7e12}}


def peak_flops(dtype: str) -> tuple[float, str]:
  """The peak that model FLOP utilisation is a fraction of, and where it comes from: a
  GPU's published dense peak where known, else a matmul measured in this run."""
  kind = jax.devices()[0].device_kind
  for name, peaks in PUBLISHED_PEAK_FLOPS.items():
    if name in kind:
      return peaks[dtype], f"{name} published {dtype} peak"
  size = 2048 if jax.default_backend() == "cpu" else 8192
  return matmul_peak_flops(size, dtype), f"measured {size}^3 {dtype} matmul"


def matmul_peak_flops(size: int = 2048, dtype: str = "float32", repeats: int = 10) -> float:
  a = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    out = matmul(a)
  out.block_until_ready()
  return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def ours(config, batch: int, dtype: str):
  """(train_fn, infer_fn(batch_size)) each returning seconds for one call."""
  config.model.dtype = dtype
  training = _common.our_training(config, batch)
  module, train_step, data = training["module"], training["step"], training["data"]
  infer = jax.jit(lambda v, x: module.apply(v, normalize(x), train=False))
  holder = {"state": training["state"]}

  def train():
    start = time.perf_counter()
    holder["state"], metrics = train_step(holder["state"], data)
    metrics["loss"].block_until_ready()
    return time.perf_counter() - start

  on_device = jax.device_put(training["variables"])  # not host arrays copied in every call

  def inference(size):
    x = data["image"][:size]
    def run():
      start = time.perf_counter()
      infer(on_device, x).block_until_ready()
      return time.perf_counter() - start
    return run
  return train, inference


def theirs(name: str, batch: int, resolution: int, dtype: str):
  import torch
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest kernels for these shapes
  model, step, images = _common.their_training(name, batch, resolution, device)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def train():
    start = time.perf_counter()
    step(autocast)
    sync()
    return time.perf_counter() - start

  def inference(size):
    x = images[:size]
    def run():
      model.eval()
      start = time.perf_counter()
      with torch.inference_mode(), autocast:
        model(x)
      sync()
      return time.perf_counter() - start
    return run
  return train, inference


def plain_loop(variant: str, batch: int, resolution: int):
  """A researcher's own loop: `create_model`, `module.apply`, optax; no process settings."""
  import optax

  import effnetlite
  module, variables = effnetlite.create_model(variant)
  optimizer = optax.rmsprop(1e-4, decay=0.9, eps=1e-3, momentum=0.9)
  state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
  images = jnp.asarray(np.random.RandomState(0).randint(0, 256, (batch, resolution,
                                                                 resolution, 3), np.uint8))
  labels = jnp.zeros((batch,), jnp.int32)

  @jax.jit
  def train_step(state, images, labels, rng):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      logits, updated = module.apply({"params": params, "batch_stats": batch_stats},
                                     effnetlite.normalize(images), train=True,
                                     mutable=["batch_stats"], rngs={"dropout": rng})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updated
    (loss, updated), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), updated["batch_stats"], opt_state), loss
  holder = {"state": state, "rng": jax.random.PRNGKey(0)}

  def train():
    start = time.perf_counter()
    holder["rng"], rng = jax.random.split(holder["rng"])
    holder["state"], loss = train_step(holder["state"], images, labels, rng)
    loss.block_until_ready()
    return time.perf_counter() - start
  return train, None


def peak_memory_bytes(framework: str) -> int:
  """The process's peak so far: the resident set's (VmHWM) on CPU, the device's on a GPU."""
  if jax.default_backend() == "cpu":
    with open("/proc/self/status", encoding="ascii") as handle:
      return 1024 * next(int(line.split()[1]) for line in handle
                         if line.startswith("VmHWM:"))
  if framework == "theirs":
    import torch
    return torch.cuda.max_memory_allocated()
  return jax.devices()[0].memory_stats()["peak_bytes_in_use"]


def timed(fn, warmup: int, repeats: int) -> tuple[list[float], float]:
  """Seconds of `repeats` calls after `warmup`, and the page faults per timed call."""
  for _ in range(warmup):
    fn()
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  seconds = [fn() for _ in range(repeats)]
  return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeats


def child(framework: str, config, batch: int) -> dict:
  """One measuring process: each dtype's training (float32 first: the peak memory is read
  after it) and, for ours and theirs, inference at `batch` and 1."""
  resolution, result = config.model.resolution, {}
  for dtype in sorted(_DTYPES.value, key=lambda d: d != "float32"):
    if framework == "plain":
      if dtype != "float32":
        continue
      train, infer = plain_loop(_VARIANT.value, batch, resolution)
    elif framework == "ours":
      train, infer = ours(config.copy_and_resolve_references(), batch, dtype)
    else:
      train, infer = theirs(_VARIANT.value, batch, resolution, dtype)
    seconds, faults = timed(train, _WARMUP.value, _REPEATS.value)
    result[dtype] = {"train": seconds, "faults_per_train_step": faults}
    if dtype == "float32":
      result["peak_bytes"] = peak_memory_bytes(framework)
    if infer is not None:
      for key, size in (("infer_batch", batch), ("infer_1", 1)):
        result[dtype][key] = timed(infer(size), _WARMUP.value, _REPEATS.value)[0]
  return result


def run_child(framework: str, resolution: int) -> dict:
  command = [sys.executable, os.path.abspath(__file__), f"--child={framework}",
             f"--variant={_VARIANT.value}", f"--batch={_BATCH.value}",
             f"--resolution={resolution}", f"--dtypes={','.join(_DTYPES.value)}",
             f"--repeats={_REPEATS.value}", f"--warmup={_WARMUP.value}"]
  done = subprocess.run(command, capture_output=True, text=True,
                        env=_common.child_environment(framework))
  if done.returncode:
    raise RuntimeError(f"{framework} process failed: {done.stderr[-3000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def median_rate(seconds: list[float], images: int) -> float:
  return images / statistics.median(seconds)


def summarise(runs: dict[str, list[dict]], batch: int, macs: int,
              peaks: dict[str, float]) -> tuple[list[dict], dict]:
  """Rows per (task, dtype): median over rounds of each round's median rate, and the
  per-round ratios; and the peak-memory summary of the same processes."""
  rows = []
  for dtype in _DTYPES.value:
    for task, key, images, flops_per_image in (
        ("train", "train", batch, 6 * macs),
        (f"inference batch {batch}", "infer_batch", batch, 2 * macs),
        ("inference batch 1", "infer_1", 1, 2 * macs)):
      rates = {framework: [median_rate(run[dtype][key], images) for run in framework_runs
                           if key in run.get(dtype, {})]
               for framework, framework_runs in runs.items()}
      ours_rate = statistics.median(rates["ours"])
      row = {"task": task, "dtype": dtype, "ours_images_per_sec": ours_rate,
             "ours_rounds": rates["ours"],
             "ours_fraction_of_peak": ours_rate * flops_per_image / peaks[dtype],
             "ours_faults_per_step": statistics.median(
                 run[dtype]["faults_per_train_step"] for run in runs["ours"])}
      if rates.get("theirs"):
        theirs_rate = statistics.median(rates["theirs"])
        row.update(theirs_images_per_sec=theirs_rate, theirs_rounds=rates["theirs"],
                   ratio=ours_rate / theirs_rate,
                   round_ratios=[o / t for o, t in zip(rates["ours"], rates["theirs"])],
                   theirs_fraction_of_peak=theirs_rate * flops_per_image / peaks[dtype],
                   theirs_faults_per_step=statistics.median(
                       run[dtype]["faults_per_train_step"] for run in runs["theirs"]))
      if rates.get("plain"):
        row.update(plain_images_per_sec=statistics.median(rates["plain"]),
                   plain_rounds=rates["plain"])
      rows.append(row)
  memory = {framework: [run["peak_bytes"] / 1e9 for run in framework_runs]
            for framework, framework_runs in runs.items()}
  if "theirs" in memory:
    memory.update(median_ratio=statistics.median(memory["ours"]) /
                  statistics.median(memory["theirs"]),
                  worst_ratio=max(memory["ours"]) / statistics.median(memory["theirs"]))
  return rows, memory


def main(argv) -> None:
  cli.no_positional_arguments(argv)
  config = _common.benchmark_config(_VARIANT.value, _RESOLUTION.value)
  resolution, batch = config.model.resolution, _BATCH.value
  if _CHILD.value:
    print(json.dumps(child(_CHILD.value, config, batch)))
    return
  frameworks = (["ours"] + ([] if _NO_TORCH.value else ["theirs"])
                + (["plain"] if _PLAIN_LOOP.value else []))
  runs = {framework: [] for framework in frameworks}
  for _ in range(_ROUNDS.value):
    for framework in frameworks:
      runs[framework].append(run_child(framework, resolution))
  model = config.model
  macs = costs.count_macs(model.width, model.depth, resolution)
  peaks = {dtype: peak_flops(dtype) for dtype in _DTYPES.value}
  rows, memory = summarise(runs, batch, macs, {d: p for d, (p, _) in peaks.items()})
  machine = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
             "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
             "peaks": {d: {"gflops": p / 1e9, "source": source}
                       for d, (p, source) in peaks.items()},
             "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"),
             "theirs_tunables": allocator.HEAP_ON_HUGE_PAGES}
  result = {"variant": _VARIANT.value, "batch": batch, "resolution": resolution,
            "rounds": _ROUNDS.value, "repeats": _REPEATS.value, "machine": machine,
            # the formulations `ours` ran, as a training run records them
            "formulations": backend.resolve_backend(config).as_dict(),
            "rows": rows, "peak_training_memory_gb": memory, "processes": runs}
  table = markdown_table(result)
  print(table)
  if _OUTPUT.value:
    write_atomically(_OUTPUT.value, json.dumps(result, indent=2))
  if _MARKDOWN.value:
    write_atomically(_MARKDOWN.value, table)


def markdown_table(result: dict) -> str:
  machine = result["machine"]

  def cell(row: dict, key: str, scale: float = 1.0, unit: str = "", digits: int = 1) -> str:
    """A number of the row, or a dash where that framework did not run (--no_torch, no
    --plain_loop)."""
    return f"{scale * row[key]:.{digits}f}{unit}" if key in row else "—"

  title = (f"{result['variant']} @ {result['resolution']}, batch {result['batch']}, "
           f"{machine['device']} ({machine['cpus']} cpus), {result['rounds']} rounds of "
           f"fresh processes, "
           + "".join(f"{dtype} peak {p['gflops']:,.0f} GFLOP/s ({p['source']}), "
                     for dtype, p in machine["peaks"].items()) + machine["date"])
  lines = [title, "",
           "| task | dtype | ours img/s | PyTorch img/s | ours/PyTorch | per round | "
           "ours % peak | PyTorch % peak | plain loop img/s |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in result["rows"]:
    rounds = " ".join(f"{ratio:.2f}" for ratio in r.get("round_ratios", []))
    lines.append(f"| {r['task']} | {r['dtype']} | {r['ours_images_per_sec']:.1f} | "
                 f"{cell(r, 'theirs_images_per_sec')} | {cell(r, 'ratio', digits=2)} | "
                 f"{rounds} | {100 * r['ours_fraction_of_peak']:.1f}% | "
                 f"{cell(r, 'theirs_fraction_of_peak', 100, '%')} | "
                 f"{cell(r, 'plain_images_per_sec')} |")
  memory = result["peak_training_memory_gb"]
  gigabytes = lambda values: ", ".join(f"{v:.2f}" for v in values)  # noqa: E731
  where = "resident" if machine["backend"] == "cpu" else "device"
  train = next(r for r in result["rows"] if r["task"] == "train")
  lines += ["", f"peak training memory ({where}, float32, GB): ours {gigabytes(memory['ours'])}"]
  if "theirs" in memory:
    lines[-1] += (f"; PyTorch {gigabytes(memory['theirs'])}; ours/PyTorch median "
                  f"{memory['median_ratio']:.2f}, worst {memory['worst_ratio']:.2f}")
  if "plain" in memory:
    lines[-1] += f"; plain loop {gigabytes(memory['plain'])}"
  lines += ["", f"page faults per training step (median): ours {train['ours_faults_per_step']:,.0f}"
            + (f", PyTorch {train['theirs_faults_per_step']:,.0f}" if "theirs_faults_per_step"
               in train else "")]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  cli.run(main)
