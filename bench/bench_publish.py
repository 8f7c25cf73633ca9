"""Publishing at Hub scale: a synthetic zoo of N tiny untrained members (default 10,000; real member format, 2 or 3
checkpoints each) published with one branch per checkpoint to the local Hub server of the tests, with 429 answers
(Retry-After) injected; then the layout is checked against the Hub's limits, 100 random `checkpoints` rows are loaded
with `from_pretrained` by revision and by subfolder, `zoo verify --no-download` runs, and so do `zoo status` and
`zoo analyze --weights-only` on the same zoo, and `WeightDataset(repo)` is built with the tensor layouts of the
`tensor_layouts` table and, side by side, from each member's safetensors header (a range request each).

    python bench/bench_publish.py                       # 10,000 members (about 25,000 checkpoints)
    python bench/bench_publish.py --members 500 --work /tmp/zoo-bench

Each step runs in its own process: the report gives its wall time and peak RSS (the server runs in a process of its
own, so its memory is not counted). No test asserts these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from helpers.hub_server import HubServer
server = HubServer(port={port}).start()
server.throttle(every={every}, retry_after="1")
print("ready", flush=True)
while True:
    time.sleep(3600)
"""

WEIGHTS = """
import sys, time
from huggingface_hub import HfApi
from zoo.weightspace import WeightDataset
from zoo.weightspace.hub import HubZoo
repo, mode = sys.argv[1:3]
requests, parse = [], HfApi.parse_safetensors_file_metadata
HfApi.parse_safetensors_file_metadata = lambda *a, **k: requests.append(1) or parse(*a, **k)
start = time.monotonic()
source = HubZoo(repo)
if mode == "headers":
    source._tensor_tables = {}  # as for a zoo published without tensor_layouts: a header request per member
dataset = WeightDataset(source, format="flat", modality="vision", checkpoints="all")
print(f"{len(dataset)} checkpoints of {len({e.relpath for e in dataset.entries})} members, "
      f"{time.monotonic() - start:.1f} s, {len(requests)} header requests ({mode})")
"""

LOAD = """
import json, sys, torch
from safetensors.torch import load_file
from transformers import AutoModel
rows, zoo = json.load(open(sys.argv[1])), sys.argv[2]
for row in rows:
    local = load_file(f"{zoo}/{row['member_path']}/{row['checkpoint']}/model.safetensors")
    models = [AutoModel.from_pretrained(row["model_repo"], subfolder=row["subfolder"],
                                        revision=row["subfolder_revision"])]
    if row["revision"] != row["subfolder_revision"]:  # the checkpoint's own branch (--branches)
        models.append(AutoModel.from_pretrained(row["model_repo"], revision=row["revision"]))
    for model in models:
        loaded = list(model.state_dict().values())
        prefix = model.base_model_prefix + "."
        assert all(any(t.shape == v.shape and torch.equal(t, v) for t in loaded)
                   for k, v in local.items() if k.startswith(prefix)), row["subfolder"]
print(f"{len(rows)} rows loaded bit for bit")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def step(name: str, argv: list[str], env: dict[str, str], results: dict, check: bool = True) -> str:
    """Run `argv`, record its wall time and peak RSS (from wait4), print one line."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    results[name] = {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                     "exit": proc.returncode}
    print(f"{name:<28} {seconds:8.1f} s   peak RSS {usage.ru_maxrss / 1024:8.1f} MB   exit {proc.returncode}",
          flush=True)
    tail = "\n".join(line for line in out.splitlines() if "%|" not in line)[-1500:]
    if proc.returncode and check:
        print(tail)
    return tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--work", default=None, help="folder for the zoo (default: a temp folder, removed)")
    parser.add_argument("--max-repo-files", type=int, default=50_000)
    parser.add_argument("--max-folder-entries", type=int, default=5_000)
    parser.add_argument("--throttle-every", type=int, default=500, help="answer every Nth request 429")
    parser.add_argument("--load", type=int, default=100, help="random checkpoints rows to load both ways")
    parser.add_argument("--no-branches", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-publish-"))
    zoo = work / "zoo"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
           "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(work / "hf"),
           "HF_TOKEN": "hf_bench_dummy", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}
    py = sys.executable
    results: dict = {"members": args.members}
    if not (zoo / "zoo.json").is_file():
        step("write synthetic zoo", [py, "-c", "import sys; from helpers.zoo_factory import write_tiny_zoo; "
                                     f"print(write_tiny_zoo(sys.argv[1], {args.members}))", str(zoo)], env, results)
    server = subprocess.Popen([py, "-c", SERVER.format(tests=str(TESTS), port=port, every=args.throttle_every)],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout and server.stdout.readline().strip() == "ready"
        repo = "org/bench-zoo"
        publish = [py, "-m", "zoo", "publish", str(zoo), "--repo-id", repo, "--max-repo-files",
                   str(args.max_repo_files), "--max-folder-entries", str(args.max_folder_entries)]
        publish += [] if args.no_branches else ["--branches"]
        print(step("zoo publish", publish, env, results).splitlines()[-1] if results else "")
        print(step("zoo publish (unchanged)", publish, env, results).splitlines()[0])
        step("zoo verify --no-download", [py, "-m", "zoo", "verify", repo, "--no-download"], env, results)

        # the layout against the Hub's limits, through the API
        check = (
            "import json, sys\nfrom collections import defaultdict\nfrom datasets import load_dataset\n"
            "from huggingface_hub import HfApi\nrows = load_dataset(sys.argv[1], 'checkpoints', split='train')\n"
            "api, out = HfApi(), {'rows': rows.num_rows, 'repos': {}}\n"
            "for repo in sorted(set(rows['model_repo'])):\n"
            "    files = [f.path for f in api.list_repo_tree(repo, recursive=True) if hasattr(f, 'blob_id')]\n"
            "    entries = defaultdict(set)\n"
            "    for path in files:\n"
            "        parts = path.split('/')\n"
            "        for depth in range(len(parts)):\n"
            "            entries['/'.join(parts[:depth])].add(parts[depth])\n"
            "    out['repos'][repo] = {'files': len(files), 'max_folder_entries': max(map(len, entries.values())),\n"
            "                          'branches': len(api.list_repo_refs(repo).branches)}\n"
            "sample = random_rows = [dict(rows[i]) for i in __import__('random').Random(0).sample(range(rows.num_rows),"
            f" min({args.load}, rows.num_rows))]\n"
            "json.dump(sample, open(sys.argv[2], 'w'), default=str)\nprint(json.dumps(out))\n")
        sample = work / "sample.json"
        layout_line = step("layout check", [py, "-c", check, repo, str(sample)], env, results).splitlines()[-1]
        results["layout"] = json.loads(layout_line)
        print(json.dumps(results["layout"]))
        step(f"load {args.load} rows", [py, "-c", LOAD, str(sample), str(zoo)], env, results)
        for mode in ("tensor_layouts", "headers"):  # WeightDataset(repo): layouts from the table, or from each header
            print(step(f"WeightDataset ({mode})", [py, "-c", WEIGHTS, repo, mode], env, results).splitlines()[-1])
    finally:
        server.kill()
        server.wait()

    step("zoo status", [py, "-m", "zoo", "status", str(zoo)], env, results)
    help_text = subprocess.run([py, "-m", "zoo", "analyze", "--help"], env=env, capture_output=True, text=True).stdout
    if "--weights-only" in help_text:
        step("zoo analyze --weights-only", [py, "-m", "zoo", "analyze", str(zoo), "--weights-only", "--out",
                                            str(work / "analysis")], env, results)
    else:
        results["zoo analyze --weights-only"] = "missing: zoo analyze has no --weights-only in this tree"
        print("zoo analyze --weights-only     missing in this tree (zoo analyze has no --weights-only)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(not isinstance(v, dict) or v.get("exit", 0) == 0 for v in results.values()) else 1


if __name__ == "__main__":
    random.seed(0)
    sys.exit(main())
