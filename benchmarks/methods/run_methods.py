"""Methods and ablations on Shapes-LT, several seeds: overall / many / medium / few, mean ± spread.

    python benchmarks/methods/run_methods.py --out runs/bench-methods --seeds 0 1 2 3 4 --frontier
    python benchmarks/methods/run_methods.py --out runs/bench-ir25 --imbalance-ratio 25 --splits val test

Reuses `sage demo`'s prepared data and text cache layout under --out and the same training
settings as the demo (so the table explains what the demo shows). Each run is trained once and
reported on every split of --splits. Unless --no-record it writes results/<tag>-<split>.json and
.md beside this script (tag: --tag, else the world variant, e.g. ir25-v0, else "default") and,
after a test split, rebuilds RESULTS.md from every results/*-test.md (the default world's first;
world v2's and v1's records are kept as results/world-v2-*, world-v1-*, labelled). ``--frontier``
adds the head-tail frontier against lift (`sage report --frontier`: val chooses t, test reports).
Val figures never enter RESULTS.md: choices are made on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from sage_cli.demo import DemoConfig
from sage_cli.demo import encode_world as encode
from sage_cli.demo import prepare_world as prepare
from sage_cli.stats import summarise as summarise_values
from sage_cli.stats import summarise_paired
from sage_cli.world.shapes_lt import DEFAULT_DOMAIN

# name -> (method, options put over it): each a preset, resolved by sage_cli.train.resolve as `sage train
# --method METHOD --OPTION VALUE` would be (text: which text cache); the four methods, then the ablations.
VARIANTS = {
    "linear": ("linear", {}),
    "lift": ("lift", {}),
    "full-ft": ("full-ft", {"lr": 0.01}),  # --full-ft-lr: its own best lr on val (criteria.py's K7 grid)
    "sage": ("sage", {}),
    "sage, guidance off": ("sage", {"guidance": False}),
    "sage, compensation none": ("sage", {"compensation": "none"}),
    "sage, compensation count": ("sage", {"compensation": "count"}),
    "sage, lambda 1": ("sage", {"lam": 1.0}),  # the method spec's starting value
    # issue 10's named variants (docs/method.md#named-variants); run with --variants
    "sage-topk": ("sage-topk", {}),
    "sage-zs": ("sage-zs", {}),
    "sage-zs, lambda 1": ("sage-zs", {"lam": 1.0}),  # GLA's full correction
    "sage, lambda 0.5": ("sage", {"lam": 0.5}),
    "sage, count, lambda 0.5": ("sage", {"compensation": "count", "lam": 0.5}),
    "lift, compensation count": ("lift", {"compensation": "count"}),  # LIFT's adapter, Sage's loss
    # the text-alignment term (docs/method.md#text-alignment): with Sage's loss, and with LIFT's alone
    "sage, text-align 0.5": ("sage", {"text_align": 0.5}),
    "lift, text-align 0.5": ("lift", {"text_align": 0.5}),
    "sage, text-align 1": ("sage", {"text_align": 1.0}),
    "sage-gate": ("sage-gate", {}),
    # descriptions against templates: the text cache encoded from the world's class descriptions
    # (shapes_descriptions_v3.json; world v2: shapes_descriptions.json; no templates) for the head, the guidance
    # and the estimator
    "lift, descriptions": ("lift", {"text": "descriptions"}),
    "sage, descriptions": ("sage", {"text": "descriptions"}),
    "sage, guidance off, descriptions": ("sage", {"guidance": False, "text": "descriptions"}),
    # issue 25, candidate 2: the spread margin (sage_cli/losses/spread.py) on lift's adapter and loss
    "lift, spread 1": ("lift", {"spread": 1.0}),
    "lift, spread 2": ("lift", {"spread": 2.0}),
    "lift, spread 4": ("lift", {"spread": 4.0}),
    "lift, spread 8": ("lift", {"spread": 8.0}),
}
# text caches beside out/text (the demo's: LIFT's single template since world v3): name -> encode-text options
TEXT_CACHES = {"descriptions": {"templates": "none", "descriptions": "world"}}
DEFAULT_VARIANTS = ["linear", "lift", "full-ft", "sage", "sage, guidance off", "sage, compensation none",
                    "sage, compensation count"]
HERE = Path(__file__).resolve().parent


def train_variant(name: str, seed: int, out: Path, base: DemoConfig) -> Path:
    """Train ``name`` at ``seed`` under ``out`` (a finished run is reused: one training, every split)."""
    from sage_cli.train import resolve
    from sage_cli.train import run as train

    method, extra = VARIANTS[name]
    extra = dict(extra)
    text = extra.pop("text", None)
    run_dir = out / f"seed{seed}" / name.replace(", ", "_").replace(" ", "-")
    if (run_dir / "train.json").exists():  # finished: reused as it is (the report verifies its inputs)
        return run_dir
    options = {
        "prepared": out / "prepared", "text_cache": out / ("text" if text is None else f"text-{text}"),
        "out": run_dir,
        "epochs": base.epochs, "batch_size": base.batch_size, "lr": base.lr, "augment": base.augment, "seed": seed,
        "device": base.device, "num_workers": 0, "eval_every": 0, **extra,
        # A run cut off by a killed benchmark is redone.
        "force": run_dir.exists(),
    }
    train(resolve(method, options))
    return run_dir


def evaluate(runs: list[Path], out: Path, split: str = "test") -> dict:
    """Report ``runs`` on ``split`` into ``out``: this script's own derived output, rewritten on every call
    (the runs of a seed change when a variant is added to an earlier study)."""
    from sage_cli.report import ReportConfig
    from sage_cli.report import run as report

    result = report(ReportConfig(out=out, runs=tuple(runs), zero_shot=out.parent / "prepared",
                                 text_cache=out.parent / "text", device="cpu", num_workers=0, split=split,
                                 force=True))
    return result.report


def summarise(rows: dict[str, list[dict]]) -> str:
    lines = ["| method | overall | many | medium | few |", "|---|---|---|---|---|"]
    for name, metrics in rows.items():
        cells = []
        for key in ("top1", "many", "medium", "few"):
            summary = summarise_values(100 * m[key] for m in metrics)
            cells.append(f"{summary.mean:.1f} ± {summary.std or 0.0:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_paired(ours: dict[int, float], theirs: dict[int, float]) -> str:
    """``ours`` - ``theirs`` paired by seed: '+m [low, high]' (95% t-interval), '+m' for one seed, '–' for none."""
    s = summarise_paired(ours, theirs)
    if s is None:
        return "–"
    return f"{s.mean:+.1f}" + ("" if s.low is None else f" [{s.low:+.1f}, {s.high:+.1f}]")


def paired_row(label: str, ours: list[dict], theirs: list[dict], seeds: list[int]) -> str:
    """A table row: ``ours`` - ``theirs`` (metrics per seed, in ``seeds`` order) for overall / many / medium / few."""
    cells = [format_paired({seed: 100 * m[key] for seed, m in zip(seeds, ours)},
                           {seed: 100 * m[key] for seed, m in zip(seeds, theirs)})
             for key in ("top1", "many", "medium", "few")]
    return f"| {label} | " + " | ".join(cells) + " |"


def summarise_against(rows: dict[str, list[dict]], seeds: list[int], reference: str = "lift") -> str:
    """Each variant minus ``reference``, paired by seed: mean difference and its 95% t-interval (points)."""
    if reference not in rows:
        return ""
    lines = [f"| method - {reference} | overall | many | medium | few |", "|---|---|---|---|---|"]
    lines += [paired_row(name, metrics, rows[reference], seeds) for name, metrics in rows.items()
              if name not in (reference, "zero-shot")]
    return "\n".join(lines)


# Sage's pieces, each paired by seed against the run without it (rows present in a table only)
PIECES = [("sage", "sage, guidance off", "guidance on - off (same loss)"),
          ("sage", "sage, compensation none", "compensation semantic - none (same adapter)"),
          ("sage", "sage, compensation count", "estimator semantic - count")]


def summarise_pieces(rows: dict[str, list[dict]], seeds: list[int]) -> str:
    """Each of Sage's pieces on minus off, paired by seed: mean [95% t-interval] (points)."""
    body = [paired_row(label, rows[ours], rows[theirs], seeds) for ours, theirs, label in PIECES
            if ours in rows and theirs in rows]
    return "\n".join(["| piece | overall | many | medium | few |", "|---|---|---|---|---|", *body]) if body else ""


# What a record keeps of each run's report metrics (the report's own report.json has the rest:
# confusion matrices, reliability bins, predicted counts).
RECORD_KEYS = ("num_samples", "top1", "top5", "many", "medium", "few", "mean_class_accuracy", "ece",
               "prediction_share", "never_predicted", "per_class_accuracy")


def compact(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """``rows`` with each run's metrics cut to :data:`RECORD_KEYS`."""
    return {name: [{k: m[k] for k in RECORD_KEYS if k in m} for m in metrics] for name, metrics in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-methods"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--splits", nargs="+", default=["test"], choices=["test", "val"],
                        help="splits the report reads (val: for choices; never written to RESULTS.md)")
    parser.add_argument("--split", dest="splits", type=lambda s: [s], help=argparse.SUPPRESS)
    parser.add_argument("--imbalance-ratio", type=float, default=None, help="world variant: shapes-lt's ratio")
    parser.add_argument("--world-variant", type=int, default=0, help="world variant: the class order/count seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (recorded)")
    parser.add_argument("--tag", default=None, help="name of the records and reports (default: the world's)")
    parser.add_argument("--train-only", action="store_true",
                        help="train the runs and report nothing (a second job beside one that reports)")
    parser.add_argument("--full-ft-lr", type=float, default=None,
                        help="full-ft's peak lr (its own best on val: benchmarks/world/criteria.py's K7 grid)")
    parser.add_argument("--frontier", action="store_true",
                        help="after the last seed, the head-tail frontier against lift on the test split (t from val)")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--rewrite", action="store_true",
                        help="rewrite every results/*.md from its .json and RESULTS.md from them, then stop")
    args = parser.parse_args()
    if args.rewrite:
        for path in sorted((HERE / "results").glob("*.json")):
            if path.stem.startswith("world-v1") or path.stem.endswith("-frontier"):
                continue  # world v1's record predates this layout (its .md is kept as written); frontiers: below
            record = json.loads(path.read_text())
            record["results"] = compact(record["results"])
            tag = path.stem.rsplit("-", 1)[0]
            write_results(record["results"], record["seeds"], None, record["seconds"], record["split"],
                          record.get("world"), tag, record)
            frontier = HERE / "results" / f"{tag}-frontier.json"
            if record["split"] == "test" and frontier.is_file():
                add_frontier(json.loads(frontier.read_text()), tag)
        collect_results()
        return
    torch.set_num_threads(args.threads)
    if args.full_ft_lr is not None:
        VARIANTS["full-ft"] = ("full-ft", {"lr": args.full_ft_lr})
    base = DemoConfig(out=args.out, device="cpu")
    world = {"imbalance_ratio": args.imbalance_ratio, "variant": args.world_variant}
    started = time.perf_counter()
    prepare_inputs(args.out, base, **world)
    for text in sorted({VARIANTS[name][1].get("text") for name in args.variants} - {None}):
        encode_variant(args.out, text, base, args.world_variant)
    rows: dict[str, dict[str, list[dict]]] = {split: {"zero-shot": []} for split in args.splits}
    every_run: list[Path] = []
    for i, seed in enumerate(args.seeds):
        runs = [train_variant(name, seed, args.out, base) for name in args.variants]
        every_run += runs
        for split in [] if args.train_only else args.splits:
            tag = args.tag or world_tag({**world, "domain": DEFAULT_DOMAIN}) or "default"
            report = evaluate(runs, args.out / f"report-{tag}-{split}-seed{seed}", split)
            for name, run in zip(["zero-shot", *args.variants], report["runs"]):
                rows[split].setdefault(name, []).append(run["metrics"])
            print(f"\n{split}:\n{summarise(rows[split])}", flush=True)
            if not args.no_record:  # after every seed, so a cut-off run still leaves its figures
                write_results(rows[split], args.seeds[: i + 1], base, time.perf_counter() - started, split, world,
                              args.tag)
    if args.frontier and not args.train_only and "lift" in args.variants:
        tag = args.tag or world_tag({**world, "domain": DEFAULT_DOMAIN}) or "default"
        report = evaluate_frontier(every_run, args.out / f"report-{tag}-frontier")
        if not args.no_record:
            section = report["frontier"]
            section = {"reference": section["reference"], "grid": section["grid"], "paired": section["paired"]}
            (HERE / "results" / f"{tag}-frontier.json").write_text(json.dumps(section, indent=2) + "\n")
            add_frontier(section, tag)
            collect_results()


def evaluate_frontier(runs: list[Path], out: Path) -> dict:
    """report.json of every run (all seeds) against lift with the head-tail frontier, test split."""
    from sage_cli.report import ReportConfig
    from sage_cli.report import run as report

    return report(ReportConfig(out=out, runs=tuple(runs), device="cpu", num_workers=0, split="test",
                               reference="lift", frontier=True, force=True)).report


def add_frontier(section: dict, tag: str) -> None:
    """The frontier table (``section``: report.json's frontier, paired rows) added to results/<tag>-test.md."""
    from sage_cli.report.markdown import FRONTIER_HEADER, frontier_rows

    rows = ["| " + " | ".join(FRONTIER_HEADER) + " |", "|" + "---|" * len(FRONTIER_HEADER),
            *("| " + " | ".join(row) + " |" for row in frontier_rows({"frontier": section}))]
    md = HERE / "results" / f"{tag}-test.md"
    text = md.read_text() if md.is_file() else ""
    text = text.split(FRONTIER_TITLE)[0].rstrip("\n") + "\n"
    md.write_text(text + f"\n{FRONTIER_TITLE}\n\nEach run swept along t in z - t·log(prior) on val, read where its many "
                  "accuracy equals lift's (same seed); the same t applied to test. Above 0: a gain, not a trade. "
                  "Mean difference [95% t-interval] over seeds, points.\n\n" + "\n".join(rows) + "\n")


FRONTIER_TITLE = "Head-tail frontier against lift, paired by seed (points)."


def prepare_inputs(out: Path, base: DemoConfig, imbalance_ratio: float | None = None, variant: int = 0) -> None:
    """The demo's Shapes-LT preparation and toy-CLIP text cache under ``out`` (skipped when done);
    ``imbalance_ratio`` and ``variant`` other than the defaults prepare that world variant instead."""
    if imbalance_ratio is None and variant == 0:
        prepare(out / "prepared", base)
    else:
        from sage_cli.prepare import PrepareConfig
        from sage_cli.prepare import run as prepare_world

        prepare_world(PrepareConfig(dataset="shapes-lt", out=out / "prepared", seed=base.seed,
                                    imbalance_ratio=imbalance_ratio, variant=variant))  # the default domain
    encode(out / "prepared", out / "text", base)


def encode_variant(out: Path, name: str, base: DemoConfig, variant: int | None = None) -> None:
    """The text cache ``out/text-<name>`` (:data:`TEXT_CACHES`) from the toy CLIP, skipped when done. World v3's
    descriptions name each class's looks, which its class-order ``variant`` draws: the shipped file is variant 0's,
    another variant's is generated beside the prepared world."""
    from sage_cli.encode_text import EncodeTextConfig
    from sage_cli.encode_text import run as encode_text
    from sage_cli.world import SHAPES_DESCRIPTIONS, SHAPES_DESCRIPTIONS_V3, TOY_MODEL, TOY_WEIGHTS

    options = dict(TEXT_CACHES[name])
    if options.get("descriptions") == "world":
        options["descriptions"] = SHAPES_DESCRIPTIONS_V3 if DEFAULT_DOMAIN == "v3" else SHAPES_DESCRIPTIONS
        if DEFAULT_DOMAIN == "v3" and variant:
            from sage_cli.world.attributes import save_class_descriptions
            from sage_cli.world.shapes import class_names, describe_looks
            from sage_cli.world.shapes_lt import resolve_domain

            options["descriptions"] = save_class_descriptions(
                out / f"descriptions-v3-variant{variant}.json", class_names(), describe_looks(resolve_domain("v3", variant)))
    target = out / f"text-{name}"
    if (target / "encode.json").is_file():
        return
    encode_text(EncodeTextConfig(prepared=out / "prepared", out=target, model=TOY_MODEL, pretrained=str(TOY_WEIGHTS),
                                 device=base.device, **options))


def world_tag(world: dict) -> str:
    """'' for the default world, else e.g. 'ir50-v1' (imbalance ratio 50, class-order variant 1); an unset
    ratio is the domain's default (world v3's 50; records before v3 hold no domain: world v2's 100)."""
    from sage_cli.world.shapes_lt import COUNT_DEFAULTS, DOMAIN_COUNT_DEFAULTS

    if world.get("imbalance_ratio") is None and not world.get("variant"):
        return ""
    ratio = world.get("imbalance_ratio")
    if ratio is None:
        ratio = DOMAIN_COUNT_DEFAULTS.get(world.get("domain", "fine"), COUNT_DEFAULTS)[0]
    return f"ir{ratio:g}-v{world.get('variant') or 0}"


def machine_description() -> str:
    cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | cut -d: -f2"], capture_output=True, text=True)
    return f"{cpu.stdout.strip() or platform.processor()}, {os.cpu_count()} cores, CPU only, torch {torch.__version__}"


def write_results(rows: dict[str, list[dict]], seeds: list[int], base: DemoConfig | None, seconds: float,
                  split: str = "test", world: dict | None = None, tag: str | None = None,
                  record: dict | None = None) -> None:
    """results/<tag>-<split>.json and .md (``record``: rewrite the .md of an existing record)."""
    world = world or {}
    if record is None:
        world = {**world, "domain": DEFAULT_DOMAIN}
    tag = tag or world_tag(world) or "default"
    table = summarise(rows)
    paired = summarise_against(rows, seeds)
    pieces = summarise_pieces(rows, seeds)
    if record is None:
        record = {"seeds": seeds, "split": split, "world": world, "settings": {"epochs": base.epochs,
                  "batch_size": base.batch_size, "lr": base.lr, "augment": base.augment,
                  "torch_threads": torch.get_num_threads()}, "machine": machine_description(),
                  "seconds": round(seconds), "results": compact(rows)}
    machine, settings = record["machine"], record["settings"]
    domain = world.get("domain", "fine")  # records before world v3 hold no domain: world v2's fine
    ratio = world.get("imbalance_ratio") or (50 if domain == "v3" else 100)
    world_name = (f"default world ({domain}, class-order variant 0, imbalance ratio {ratio:g})" if not world_tag(world)
                  else f"world variant ({domain}, class-order variant {world.get('variant') or 0}, imbalance ratio "
                  f"{ratio:g})")
    text = (f"## {tag}: {world_name}, {split} split\n\nSeeds {seeds}; demo settings (epochs {settings['epochs']}, "
            f"batch {settings['batch_size']}, lr {settings['lr']}, augment {settings['augment']}"
            f"{'' if domain != 'v3' else ', LIFT single template'}); toy CLIP v2; {split} "
            f"split, top-1 %, mean ± sample std over seeds.\nMachine: {machine}; {settings['torch_threads']} torch "
            f"thread(s) per run; {record['seconds']} s in all (reports only, when the runs existed).\n\n{table}\n"
            + (f"\nDifference to lift, paired by seed (points): mean [95% t-interval].\n\n{paired}\n" if paired else "")
            + (f"\nSage's pieces, on minus off, paired by seed (points).\n\n{pieces}\n" if pieces else ""))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"{tag}-{split}.json").write_text(json.dumps(record, indent=2) + "\n")
    (results / f"{tag}-{split}.md").write_text(text)
    if split == "test":
        collect_results()
    print(f"\n{split}, paired by seed against lift:\n{paired}", flush=True)


OLD_WORLDS = {  # results/<prefix>*-test.md of earlier worlds, kept below today's, each under this heading
    "world-v2-": "# World v2 (domain fine, the 18-template ensemble; the default world before world v3)\n\n"
                 "> **Measured before `lift` became LIFT-exact** (issue 21): every trained head here read CLIP's "
                 "projected feature and evaluation used open_clip's resize; `--domain fine --head-feature projected "
                 "--eval-resize clip` and `--templates ensemble` reproduce those runs.\n\n",
    "world-v1-": "# World v1 (domain hard, toy CLIP v1)\n\n",
}


def collect_results() -> None:
    """RESULTS.md: today's world's results/*-test.md (the default world first), then earlier worlds' (labelled)."""
    parts = sorted((HERE / "results").glob("*-test.md"), key=lambda p: (not p.name.startswith("default"), p.name))
    today = [p for p in parts if not p.name.startswith(tuple(OLD_WORLDS))]
    body = "\n".join(p.read_text() for p in today)
    for prefix, heading in OLD_WORLDS.items():
        old = [p for p in parts if p.name.startswith(prefix)]
        if old:
            body += "\n" + heading + "\n".join(p.read_text() for p in old)
    (HERE / "RESULTS.md").write_text(
        "# Shapes-LT: methods and ablations (test split)\n\nWritten by `benchmarks/methods/run_methods.py` from "
        "`results/*-test.md` (raw figures in the matching `.json`); the val tables the choices were made on are "
        "`results/*-val.md`, TRIALS-v3.md (world v3, the default) and TRIALS-v2.md.\n\n" + body)


if __name__ == "__main__":
    main()
