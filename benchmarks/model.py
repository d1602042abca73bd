"""Size and speed of the GL-MIL MoE network built from real plans.

Prints, per plan and device: parameters, forward time per bag (evaluation), forward + backward
time per bag (training step without the optimiser) and peak memory (CPU: the measuring process'
peak resident memory, which includes the Python and torch runtime; CUDA: peak allocated tensor
memory). Bags are worst case: every bag holds the plan's maximum number of lesions. Usage:

    python benchmarks/model.py [--plans glmil_data/preprocessed/Dataset001_SynthBrainMets/plans.json]
                               [--iterations 5] [--without-foci]

Without ``--plans`` (and without the demo's plans) a small demo-size cohort is generated and
planned in a temporary folder. The CPU plan is always measured on the CPU; the GPU plan (the same
fingerprint planned for an 80 GiB GPU) is measured where CUDA is available, with mixed precision.
``--without-foci`` adds, for every plan with a small-foci channel, the same plan without it (what a
training step costs for the extra global input channel and the descriptor).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
from glmil_auto.model import build_network
from glmil_auto.model.memory_measurement import meta_batch

plans = json.load(open(sys.argv[1]))
device, iterations = sys.argv[2], int(sys.argv[3])
torch.manual_seed(0)
net = build_network(plans).to(device)
local = plans["preprocessing"]["local"]
b, n = plans["training"]["batch_size"], local["max_instances"]
# every input the plans' network reads (the radiomic features, the small-foci candidates), at their shapes
batch = {k: (torch.randn(v.shape, device=device) if v.is_floating_point() else v)
         for k, v in meta_batch(plans, b, n, device=device).items()}
if "foci_responses" in batch:
    batch["foci_responses"] = batch["foci_responses"].abs() * 4.0
amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

def sync():
    if device == "cuda":
        torch.cuda.synchronize()

def forward_only():
    net.eval()
    with torch.no_grad(), amp:
        net(batch)

def train_step():
    net.train()
    net.zero_grad(set_to_none=True)
    with amp:
        out = net(batch)
        loss = out.aux_loss + sum(v.float().square().mean() for v in [*out.logits.values(), *out.log_risks.values()])
    loss.backward()

result = {"parameters": sum(p.numel() for p in net.parameters()), "batch": b, "instances": n}
for name, step in (("forward", forward_only), ("train", train_step)):
    step(); sync()  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    sync()
    result[name + "_s_per_bag"] = (time.perf_counter() - start) / (iterations * b)
    if device == "cuda":
        result[name + "_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(result))
"""


def plans_for_demo(work: Path) -> tuple[dict, dict]:
    """CPU and GPU plans of the demo cohort (its plans.json if the demo ran, else a small copy)."""
    from glmil_auto.experiment_planning.device_profile import DeviceProfile
    from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
    from glmil_auto.experiment_planning.planners import GLMILPlanner
    from glmil_auto.synthetic import generate_synthetic_dataset

    folder = generate_synthetic_dataset(work / "raw", n_train=24, n_test=0, size="demo", seed=0, num_processes=2,
                                        progress=False)
    fingerprint = DatasetFingerprintExtractor(folder, num_processes=2, progress=False,
                                              output_folder=work / "preprocessed").run()
    dataset_json = json.loads((folder / "dataset.json").read_text())
    cpu = GLMILPlanner(fingerprint, dataset_json, DeviceProfile("cpu", "cpu", 6.0, os.cpu_count() or 1)).plan()
    gpu = GLMILPlanner(fingerprint, dataset_json, DeviceProfile("cuda", "80 GiB GPU", 80.0, 16)).plan()
    return cpu, gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", type=Path, default=None, help="a CPU plans file (default: plan the demo cohort)")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--without-foci", action="store_true", help="also the plans without the small-foci channel")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="glmil_model_bench_") as tmp:
        work = Path(tmp)
        if args.plans is not None:
            runs = [("given plans", json.loads(args.plans.read_text()), "cpu")]
        else:
            cpu, gpu = plans_for_demo(work)
            runs = [("CPU plan", cpu, "cpu")]
            runs.append(("GPU plan", gpu, "cuda") if torch.cuda.is_available() else ("GPU plan (no GPU here)", gpu, None))
        if args.without_foci:
            for label, plans, device in list(runs):
                if plans["preprocessing"].get("small_foci"):
                    plain = json.loads(json.dumps(plans))
                    del plain["preprocessing"]["small_foci"]
                    runs.append((f"{label}, no small foci", plain, device))
        rows = []
        for label, plans, device in runs:
            if device is None:  # no GPU: count its parameters, time nothing
                from glmil_auto.model import build_network

                rows.append((label, plans, {"parameters": sum(p.numel() for p in build_network(plans).parameters())}))
                continue
            path = work / f"{label.replace(' ', '_')}.json"
            path.write_text(json.dumps(plans))
            output = subprocess.run([sys.executable, "-c", CHILD, str(path), device, str(args.iterations)],
                                    check=True, capture_output=True, text=True).stdout
            rows.append((label, plans, json.loads(output.split("RESULT ", 1)[1])))

    print(f"\n{'plan':<34} {'device':<6} {'params':>10} {'global input':>14} {'patch':>12} {'bag':>8} "
          f"{'fwd s/bag':>10} {'fwd+bwd s/bag':>14} {'peak MiB':>9}")
    for label, plans, result in rows:
        shape = "x".join(map(str, plans["preprocessing"]["global"]["input_shape"]))
        local = plans["preprocessing"]["local"]
        patch = "x".join(map(str, local["patch_size"]))
        bag = f"{local['max_instances']}x{len(local['scales'])}"
        if "train_s_per_bag" not in result:
            print(f"{label:<34} {'-':<6} {result['parameters']:>10,} {shape:>14} {patch:>12} {bag:>8} {'-':>10} {'-':>14} {'-':>9}")
            continue
        device = "cuda" if "train_peak_mib" in result else "cpu"
        peak = result.get("train_peak_mib", result["peak_rss_mib"])
        print(f"{label:<34} {device:<6} {result['parameters']:>10,} {shape:>14} {patch:>12} {bag:>8} "
              f"{result['forward_s_per_bag']:>10.4f} {result['train_s_per_bag']:>14.4f} {peak:>9.0f}")
    print("(batch size = the plan's; bag = max instances x scales; CPU peak = process RSS, CUDA peak = allocated)")


if __name__ == "__main__":
    main()
