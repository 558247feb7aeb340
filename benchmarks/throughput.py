"""Training and inference speed and peak training memory of our model vs the PyTorch reference.

  python benchmarks/throughput.py [--variant=lite0] [--batch=32] [--resolution=224]
      [--dtypes=float32,bfloat16] [--repeats=5] [--memory_runs=3]
      [--output=results.json] [--markdown=table.md]

Speed: for each dtype, alternates ours and theirs for every repeat after warm-up and
reports the median images/s, the ratio ours/theirs, and model FLOP utilisation
(img/s x 6 x MACs for training, 2 x MACs for inference) as a fraction of the peak: a
matmul measured in the same run on CPU, the published dense peak on H100/H200. Theirs:
`efficientnet-lite-pytorch`, channels_last, threads = cores, inference under
`torch.inference_mode`, bfloat16 through `torch.autocast` (AMP; CPU or GPU, where
cuDNN's autotuner is on). On a GPU both frameworks run there.
Memory: the peak of fresh processes that each build one framework's training step and
run it, alternating ours and theirs `--memory_runs` times: the resident set on CPU, the
allocator's device peak on a GPU.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

# First, before JAX and PyTorch load: glibc malloc with one arena, no mmap, no trimming,
# for both frameworks; without it PyTorch loses ~3x on CPU and XLA:CPU page-faults its
# temporaries back in every step (effnetlite/utils/allocator.py).
from effnetlite.utils.process import configure_process  # isort: skip

configure_process()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from effnetlite import config as config_lib  # noqa: E402
from effnetlite.nn import costs  # noqa: E402
from effnetlite.data.preprocessing import normalize  # noqa: E402
from effnetlite.train import optimizer as optimizer_lib  # noqa: E402
from effnetlite.train import steps  # noqa: E402
from effnetlite.utils import cli  # noqa: E402
from effnetlite.utils.files import write_atomically  # noqa: E402
from effnetlite.weights import factory  # noqa: E402

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
_MEMORY_RUNS = flags.DEFINE_integer("memory_runs", 3, "Fresh training processes per framework "
                                    "for the peak memory (0: skip).", lower_bound=0)
_MEMORY_STEPS = flags.DEFINE_integer("memory_steps", 6, "Training steps of each such process.",
                                     lower_bound=1)
_SPEED = flags.DEFINE_bool("speed", True, "Time training and inference (--nospeed: memory "
                           "only).")
_CHILD = flags.DEFINE_enum("child", None, ["ours", "theirs"],
                           "Internal: be one memory-measuring training process.")
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
  module = factory.module_from_config(config)
  variables = factory.init_variables(module, config.model.resolution)
  schedule = optimizer_lib.learning_rate_schedule(config, batch, 100, 1000)
  optimizer = optimizer_lib.make_optimizer(config, schedule)
  state = steps.create_train_state(variables, optimizer, jax.random.PRNGKey(0))
  train_step = jax.jit(steps.make_train_step(module, config, optimizer, schedule),
                       donate_argnums=0)
  resolution = config.model.resolution
  # uint8 pixels, as the training pipeline sends them (the step normalises on the device).
  images = jnp.asarray(np.random.RandomState(0).randint(0, 256, (batch, resolution,
                                                                 resolution, 3), np.uint8))
  data = {"image": images, "label": jnp.zeros((batch,), jnp.int32)}
  infer = jax.jit(lambda v, x: module.apply(v, normalize(x), train=False))
  holder = {"state": state}

  def train():
    start = time.perf_counter()
    holder["state"], metrics = train_step(holder["state"], data)
    metrics["loss"].block_until_ready()
    return time.perf_counter() - start

  on_device = jax.device_put(variables)  # not host arrays copied in on every call

  def inference(size):
    x = images[:size]
    def run():
      start = time.perf_counter()
      infer(on_device, x).block_until_ready()
      return time.perf_counter() - start
    return run
  return train, inference


def theirs(name: str, batch: int, resolution: int, dtype: str):
  import torch
  from efficientnet_lite_pytorch import EfficientNet
  torch.set_num_threads(os.cpu_count())
  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest kernels for these shapes
  model = EfficientNet.from_name(f"efficientnet-{name}").to(device)
  model = model.to(memory_format=torch.channels_last)
  optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.9, eps=1e-3,
                                  momentum=0.9)
  images = torch.rand(batch, 3, resolution, resolution, device=device).to(
      memory_format=torch.channels_last)
  labels = torch.zeros(batch, dtype=torch.long, device=device)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def train():
    model.train()
    start = time.perf_counter()
    with autocast:
      loss = torch.nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
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


def measure(pairs, warmup: int, repeats: int) -> dict[str, list[float]]:
  """Alternates the timed functions so that drift in machine speed hits both alike."""
  times = {name: [] for name in pairs}
  for _ in range(warmup):
    for fn in pairs.values():
      fn()
  for _ in range(repeats):
    for name, fn in pairs.items():
      time.sleep(0.3)  # lets the other framework's spinning worker threads go idle first
      times[name].append(fn())
  return times


def speed_rows(times: dict[str, list[float]], dtype: str, batch: int, macs: int,
               peak: float) -> list[dict]:
  rows = []
  for task, key, images, flops_per_image in (
      ("train", "train", batch, 6 * macs),
      (f"inference batch {batch}", "infer_batch", batch, 2 * macs),
      ("inference batch 1", "infer_1", 1, 2 * macs)):
    our_rate = images / statistics.median(times[f"ours_{key}"])
    row = {"task": task, "dtype": dtype, "ours_images_per_sec": our_rate,
           "ours_fraction_of_peak": our_rate * flops_per_image / peak}
    if f"theirs_{key}" in times:
      their_rate = images / statistics.median(times[f"theirs_{key}"])
      row.update(theirs_images_per_sec=their_rate, ratio=our_rate / their_rate,
                 theirs_fraction_of_peak=their_rate * flops_per_image / peak)
    rows.append(row)
  return rows


def train_for_memory(framework: str, config, batch: int, steps: int) -> None:
  """A memory-measuring child: build one framework's float32 training step, run it, and
  print its peak memory. On CPU the resident set's peak (VmHWM counts from the exec; the
  kernel's ru_maxrss of a child would start from this parent's resident set at the
  fork); on a GPU the allocator's peak on the device."""
  train, _ = (ours(config, batch, "float32") if framework == "ours" else
              theirs(_VARIANT.value, batch, config.model.resolution, "float32"))
  for _ in range(steps):
    train()
  if jax.default_backend() != "cpu":
    if framework == "ours":
      peak = jax.devices()[0].memory_stats()["peak_bytes_in_use"]
    else:
      import torch
      peak = torch.cuda.max_memory_allocated()
    print(f"peak_bytes {peak}")
    return
  with open("/proc/self/status", encoding="ascii") as handle:
    peak_kb = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
  print(f"peak_bytes {peak_kb * 1024}")


def peak_memory(framework: str, resolution: int) -> float:
  """Peak resident set (GB) of a fresh training process of `framework`."""
  command = [sys.executable, os.path.abspath(__file__), f"--child={framework}",
             f"--variant={_VARIANT.value}", f"--batch={_BATCH.value}",
             f"--resolution={resolution}", f"--memory_steps={_MEMORY_STEPS.value}"]
  child = subprocess.run(command, capture_output=True, text=True)
  if child.returncode:
    raise RuntimeError(f"{framework} memory run failed: {child.stderr[-2000:]}")
  return int(child.stdout.split("peak_bytes")[-1]) / 1e9


def memory_rows(resolution: int, runs: int, with_torch: bool) -> dict:
  peaks = {"ours": [], "theirs": []}
  for _ in range(runs):  # alternating, so drift in the machine hits both alike
    for framework in ("ours", "theirs") if with_torch else ("ours",):
      peaks[framework].append(peak_memory(framework, resolution))
  result = {"runs": runs, "ours_gb": peaks["ours"]}
  if with_torch:
    result.update(theirs_gb=peaks["theirs"],
                  median_ratio=statistics.median(peaks["ours"]) /
                  statistics.median(peaks["theirs"]),
                  worst_ratio=max(peaks["ours"]) / statistics.median(peaks["theirs"]))
  return result


def main(argv) -> None:
  cli.no_positional_arguments(argv)
  config = config_lib.variant_config(_VARIANT.value)
  if _RESOLUTION.value:
    config.model.resolution = _RESOLUTION.value
  resolution, batch = config.model.resolution, _BATCH.value
  if _CHILD.value:
    train_for_memory(_CHILD.value, config, batch, _MEMORY_STEPS.value)
    return
  model = config.model
  macs = costs.count_macs(model.width, model.depth, resolution)
  rows, times, peaks = [], {}, {}
  for dtype in _DTYPES.value if _SPEED.value else ():
    peak, source = peak_flops(dtype)
    peaks[dtype] = {"gflops": peak / 1e9, "source": source}
    our_train, our_infer = ours(config.copy_and_resolve_references(), batch, dtype)
    pairs = {"ours_train": our_train, "ours_infer_batch": our_infer(batch),
             "ours_infer_1": our_infer(1)}
    if not _NO_TORCH.value:
      their_train, their_infer = theirs(_VARIANT.value, batch, resolution, dtype)
      pairs.update(theirs_train=their_train, theirs_infer_batch=their_infer(batch),
                   theirs_infer_1=their_infer(1))
    times[dtype] = measure(pairs, _WARMUP.value, _REPEATS.value)
    rows += speed_rows(times[dtype], dtype, batch, macs, peak)
  machine = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
             "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
             "peaks": peaks, "jax": jax.__version__,
             "date": time.strftime("%Y-%m-%d")}
  if not _NO_TORCH.value:
    import torch
    machine["torch"] = torch.__version__
  result = {"variant": _VARIANT.value, "batch": batch, "resolution": resolution,
            "repeats": _REPEATS.value, "machine": machine, "rows": rows,
            "seconds_per_call": times}
  if _MEMORY_RUNS.value:
    result["peak_training_memory"] = memory_rows(resolution, _MEMORY_RUNS.value,
                                                 not _NO_TORCH.value)
  table = markdown_table(result)
  print(table)
  if _OUTPUT.value:
    write_atomically(_OUTPUT.value, json.dumps(result, indent=2))
  if _MARKDOWN.value:
    write_atomically(_MARKDOWN.value, table)


def markdown_table(result: dict) -> str:
  machine, nan = result["machine"], float("nan")
  title = (f"{result['variant']} @ {result['resolution']}, batch {result['batch']}, "
           f"{machine['device']} ({machine['cpus']} cpus), "
           + "".join(f"{dtype} peak {p['gflops']:,.0f} GFLOP/s ({p['source']}), "
                     for dtype, p in machine["peaks"].items()) + machine["date"])
  lines = [title, "",
           "| task | dtype | ours img/s | PyTorch img/s | ours/PyTorch | ours % peak | "
           "PyTorch % peak |",
           "|---|---|---|---|---|---|---|"]
  for r in result["rows"]:
    lines.append(f"| {r['task']} | {r['dtype']} | {r['ours_images_per_sec']:.1f} | "
                 f"{r.get('theirs_images_per_sec', nan):.1f} | {r.get('ratio', nan):.2f} | "
                 f"{100 * r['ours_fraction_of_peak']:.1f}% | "
                 f"{100 * r.get('theirs_fraction_of_peak', nan):.1f}% |")
  memory = result.get("peak_training_memory")
  if memory:
    gigabytes = lambda values: ", ".join(f"{v:.2f}" for v in values)  # noqa: E731
    where = "resident" if result["machine"]["backend"] == "cpu" else "device"
    lines += ["", f"peak training memory ({where}), float32, {memory['runs']} fresh "
              f"processes each "
              f"(GB): ours {gigabytes(memory['ours_gb'])}"]
    if "theirs_gb" in memory:
      lines[-1] += (f"; PyTorch {gigabytes(memory['theirs_gb'])}; ours/PyTorch median "
                    f"{memory['median_ratio']:.2f}, worst {memory['worst_ratio']:.2f}")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  cli.run(main)
