"""`zoo`: the command line of transformer-zoo.

Each subcommand's arguments are declared here, and the function that does its work is named here too.
"""

from __future__ import annotations

import argparse
import sys

from zoo import kinds

# ---------------------------------------------------------------- the commands
# Each command's work is a `cli_<command>(args)` of the module that owns the concept, imported only when the command
# runs (so `zoo status` stays fast) but named here, so a reader or a tool can follow a command to its code.


def _generate(args: argparse.Namespace) -> int:
    from zoo.population import cli_generate

    return cli_generate(args)


def _status(args: argparse.Namespace) -> int:
    from zoo.status import cli_status

    return cli_status(args)


def _env(args: argparse.Namespace) -> int:
    from zoo.reproduce import cli_env

    return cli_env(args)


def _publish(args: argparse.Namespace) -> int:
    from zoo.publish import cli_publish

    return cli_publish(args)


def _verify(args: argparse.Namespace) -> int:
    from zoo.publish import cli_verify

    return cli_verify(args)


def _soup(args: argparse.Namespace) -> int:
    from zoo.studies.soups import cli_soup

    return cli_soup(args)


def _analyze(args: argparse.Namespace) -> int:
    from zoo.studies.analysis import cli_analyze

    return cli_analyze(args)


def _benchmark(args: argparse.Namespace) -> int:
    from zoo.studies.benchmark import cli_benchmark

    return cli_benchmark(args)


# ---------------------------------------------------------------- the arguments


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="train a population from a zoo spec (Ray Tune), resumable")
    p.add_argument("spec", help="zoo spec YAML, e.g. recipes/configs/zoos/quickstart.yaml")
    p.add_argument("--zoo-dir", required=True, help="folder of the zoo (created, or resumed)")
    p.add_argument("--dry-run", action="store_true", help="print the planned members, train nothing")
    p.add_argument("--ray-address", default=None, help="address of a running Ray cluster ('auto' finds it)")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per member (overrides the spec)")
    p.add_argument("--gpus-per-trial", type=float, default=None, help="GPUs per member, fractions pack members")
    p.add_argument("--optuna", type=int, default=None, metavar="N", help="sample N members from ranges with Optuna")
    p.add_argument("--pack", type=int, default=None, metavar="K",
                   help="train up to K members of a stage at once in one trial (overrides the spec's `pack:`)")
    p.add_argument("--stage", choices=[*kinds.STAGES, "all"], default="all")
    p.add_argument("--modality", choices=[*kinds.MODALITIES, "all"], default="all")
    p.set_defaults(run=_generate)


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="table of a zoo's members: stage, epochs, last metric, state")
    p.add_argument("zoo_dir")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.set_defaults(run=_status)


def _add_env(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="pip requirements that rebuild the environment a member was trained in")
    p.add_argument("member", help="member folder, or one of its checkpoint folders")
    p.set_defaults(run=_env)


def _add_publish(sub: argparse._SubParsersAction) -> None:
    from zoo.cli_types import request_budget, whole_number

    p = sub.add_parser("publish", help="push a zoo to the Hub as a dataset repo (tables) and a model repo")
    p.add_argument("zoo_dir")
    p.add_argument("--repo-id", required=True, help="dataset repo, e.g. org/transformer-zoo")
    p.add_argument("--model-repo-id", default=None, help="model repo (default: <repo-id>-models)")
    p.add_argument("--local-dir", default=None, help="write the repos to this folder instead of pushing")
    p.add_argument("--with-weights", action="store_true", help="add a `weights` table of flattened parameters")
    p.add_argument("--allow-incomplete", action="store_true", help="publish even with incomplete/failed members")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")
    p.add_argument("--branches", action="store_true",
                   help="also give every checkpoint a branch whose root holds it alone (load with revision=...)")
    p.add_argument("--max-repo-files", type=whole_number(3, 99_999), default=50_000,
                   help="files per model repo; more spread the zoo over <model repo>-00, -01, ... (Hub: < 100,000)")
    p.add_argument("--max-folder-entries", type=whole_number(3, 9_999), default=5_000,
                   help="entries per folder; fuller folders are split into shard_NNNN folders (Hub: < 10,000)")
    p.add_argument("--commit-files", type=whole_number(1, 1000), default=100,
                   help="files per commit (the Hub advises 50 to 100)")
    p.add_argument("--request-budget", type=request_budget, default=None, metavar="N/SECONDS",
                   help="at most N HTTP requests per SECONDS, e.g. 900/300 under a free account's 1,000 per 5 min")
    p.add_argument("--max-retries", type=whole_number(0), default=8, help="retries of a request answered 429 or 5xx")
    p.set_defaults(run=_publish)


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="download a published zoo and check every file against its manifest")
    p.add_argument("repo_id", help="dataset repo id, or a folder written by `zoo publish --local-dir`")
    p.add_argument("--revision", default=None)
    p.add_argument("--no-download", action="store_true",
                   help="trust the Hub's listing (sha256 of LFS files, git blob ids) instead of downloading every file")
    p.set_defaults(run=_verify)


def _add_soup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soup", help="average members (uniform/greedy soups) or a member's last checkpoints")
    p.add_argument("zoo_dir")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--parent", help="pretrained member whose finetuned children are the ingredients")
    who.add_argument("--member", help="finetuned member whose checkpoints are averaged (--method epochs)")
    p.add_argument("--method", choices=["uniform", "greedy", "epochs"], required=True)
    p.add_argument("--last", type=int, default=5, help="--method epochs: how many last checkpoints")
    p.add_argument("--out", required=True, help="folder of the soup (a loadable checkpoint folder)")
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(run=_soup)


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="diversity and performance report of a zoo (report.md, figures, tables)")
    p.add_argument("zoo_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--max-members", type=int, default=None,
                   help="cap the members used by pairwise metrics (an even sample; --weights-only: default 128)")
    p.add_argument("--weights-only", action="store_true",
                   help="no data, no models: performance from result.json and the weight space, streamed")
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(run=_analyze)


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="weight-space learning baselines on a zoo")
    p.add_argument("zoo_dir")
    p.add_argument("--task", choices=["predict-accuracy", "predict-factor"], required=True)
    p.add_argument("--factor", default=None,
                   help="--task predict-factor: which factor (default: optimizer, else optim)")
    p.add_argument("--modality", choices=kinds.MODALITIES, default=None,
                   help="members of this modality (default: the one with the most usable members; it is printed)")
    p.add_argument("--stage", choices=[*kinds.STAGES, "all"], default=None,
                   help="members of this stage (default: predict-accuracy finetuned members, else all; "
                        "predict-factor all)")
    p.add_argument("--kind", default=None, help="members of this kind only, e.g. vit-finetune")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the scores as JSON here too")
    p.set_defaults(run=_benchmark)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="Generate, publish and study transformer model zoos.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_generate, _add_status, _add_env, _add_publish, _add_verify, _add_soup, _add_analyze,
                _add_benchmark):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("zoo: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"zoo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
