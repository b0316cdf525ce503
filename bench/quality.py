"""Quality table on MovieLens-100K: every registered model, several seeds, mean ± std, train time.

Primary: chronological leave-one-out, full ranking, seen items excluded, compared with the floors of
issue 4. Secondary: the rating RMSE/MAE on u1.base/u1.test (and on a temporal split when asked) and
the NCF sampled protocol, clearly labelled. Writes markdown to --out (default bench/results/quality.md)
and JSON beside it.

    python bench/quality.py [--models all] [--seeds 3] [--threads 2] [--protocols loo,sampled,rating-u1]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.paths import ml100k_available, ml100k_dir  # noqa: E402

# model -> (NDCG@10 floor, HR@10 floor, anchor), from issue 4 (RecBole 1.2.1 and EASE on this machine).
FLOORS: dict[str, tuple[float | None, float | None, str]] = {
    "popularity": (0.040, 0.072, "RecBole Pop"),
    "mf": (0.0673, 0.124, "RecBole BPR"),
    "neumf": (0.0655, 0.120, "RecBole NeuMF"),
    "gru4rec": (0.060, 0.115, "RecBole GRU4Rec"),
    "sasrec": (0.065, 0.120, "RecBole SASRec"),
    "content": (None, None, "beats popularity"),
    "hybrid": (0.0737, 0.145, "EASE (λ=500)"),
}
RMSE_CEILING = 0.92
PROTOCOLS = ("loo", "sampled", "rating-u1")  # add rating-temporal with --protocols


def primary_table(loo) -> list[str]:
    """NDCG@10 / HR@10 against the floors; every model must also beat popularity."""
    pop = loo.models.get("popularity")
    pop_ndcg = pop.mean.get("ndcg@10") if pop is not None and pop.runs else None
    lines = [
        "| model | NDCG@10 | HR@10 | floor NDCG@10 | floor HR@10 | anchor | verdict | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in loo.models.items():
        floor_ndcg, floor_hr, anchor = FLOORS.get(name, (None, None, "beats popularity"))
        if not m.runs:
            floors = f"{_f(floor_ndcg)} | {_f(floor_hr)} | {anchor}"
            lines.append(f"| {name} | - | - | {floors} | {m.status}: {m.reason} | - |")
            continue
        ndcg, hr = m.mean["ndcg@10"], m.mean["hr@10"]
        problems = []
        if floor_ndcg is not None and ndcg < floor_ndcg:
            problems.append(f"NDCG {ndcg - floor_ndcg:+.4f} below floor")
        if floor_hr is not None and hr < floor_hr:
            problems.append(f"HR {hr - floor_hr:+.4f} below floor")
        if name != "popularity" and pop_ndcg is not None and ndcg <= pop_ndcg:
            problems.append("does not beat popularity")
        if m.status != "ok":
            problems.append(f"{m.status}: {m.reason}")
        verdict = "**BELOW: " + "; ".join(problems) + "**" if problems else "meets"
        lines.append(
            f"| {name} | {_pm(m, 'ndcg@10')} | {_pm(m, 'hr@10')} | {_f(floor_ndcg)} | {_f(floor_hr)} | {anchor} "
            f"| {verdict} | {_pm(m, 'train_s', 1)} |"
        )
    return lines


def dependency_notes(res) -> list[str]:
    from app.recsys.pipeline import dependencies

    objective = "rating" if res.protocol.startswith("rating") else None  # the rating hybrid stacks rating models
    notes = []
    for name, m in res.models.items():
        deps = dependencies(name, objective) if m.status != "unavailable" else ()
        if deps:
            notes.append(
                f"- {name}: train s counts only fitting {name} itself; its members ({', '.join(deps)}) are "
                "trained once per seed and timed in their own rows."
            )
    return notes + [""] if notes else []


def rating_lines(res) -> list[str]:
    from app.recsys.report import format_table

    lines = [format_table(res, markdown=True), ""]
    if res.protocol == "rating-u1":
        for name, m in res.models.items():
            if m.runs:
                verdict = "meets" if m.mean["rmse"] <= RMSE_CEILING else "**ABOVE**"
                lines.append(f"- {name}: RMSE {_pm(m, 'rmse')} {verdict} the {RMSE_CEILING} ceiling")
        lines.append("")
    return lines + dependency_notes(res)


def _pm(m, key: str, digits: int = 4) -> str:
    from app.recsys.report import cell

    return cell(m, key, digits)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}".rstrip("0").rstrip(".")


def render(results, command: str, seconds: float, threads: int) -> str:
    import torch

    from app.recsys.report import format_table

    by = {r.protocol: r for r in results}
    seeds = len(results[0].cfg.seeds)
    out = [
        "## Quality on MovieLens-100K",
        "",
        f"Reproduce: `{command}` ({seconds / 60:.1f} min on {platform.machine()} with {threads} torch thread(s), "
        f"torch {torch.__version__}). Each model trains with its tuned defaults; seeds 0..{seeds - 1}; "
        "mean ± sample std over seeds; train s is the wall time of one fit.",
        "",
    ]
    if "loo" in by:
        out += ["### Leave-one-out by time, full ranking (primary)", "", by["loo"].label + ".", ""]
        out += primary_table(by["loo"]) + [""] + dependency_notes(by["loo"])
        out += ["All metrics:", "", format_table(by["loo"], markdown=True), ""]
    for proto in ("rating-u1", "rating-temporal"):
        if proto in by:
            out += [f"### Rating ({proto})", ""] + rating_lines(by[proto])
    if "sampled" in by:
        out += ["### SAMPLED protocol (secondary, not comparable to full ranking)", ""]
        out += [format_table(by["sampled"], k=10, markdown=True), ""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="all")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=None, help="override every model's budget (smoke runs only)")
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--out", type=Path, default=Path("bench/results/quality.md"))
    args = p.parse_args()
    if not ml100k_available():
        sys.exit(f"skipped: MovieLens 100K not found at {ml100k_dir()} (set DEEPREC_ML100K_DIR)")

    import torch

    from app.commands.evaluate import load_folder
    from app.recsys.experiment import EvalConfig, evaluate_models
    from app.recsys.report import write_json

    torch.set_num_threads(args.threads)
    data = load_folder(ml100k_dir())
    cfg = EvalConfig(ks=(5, 10, 20), seeds=tuple(range(args.seeds)), epochs=args.epochs)
    t0 = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results = evaluate_models(args.models, data, args.protocols.split(","), cfg, log=log)
    defaults = vars(p.parse_args([]))
    changed = [f" --{k} {v}" for k, v in vars(args).items() if v != defaults[k] and k != "out"]
    command = "python bench/quality.py" + "".join(changed)
    text = render(results, command, time.perf_counter() - t0, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    write_json(results, args.out.with_suffix(".json"))
    print(text)


if __name__ == "__main__":
    main()
