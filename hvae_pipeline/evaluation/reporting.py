"""Human-readable reports of evaluation summaries: markdown tables and the DSC-vs-N plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..storage.atomic_write import atomic_file

NOT_AVAILABLE = "–"
NOT_COMPUTED = "not computed (see below)"


def mean_std(mean: float | None, std: float | None, scale: float = 1.0, digits: int = 2) -> str:
    """``"mean ± std"`` with ``scale`` applied (e.g. 100 for percentages); a missing std prints the mean alone."""
    if mean is None:
        return NOT_AVAILABLE
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def augmentation_markdown(summary: dict[str, Any]) -> str:
    """Markdown report of an augmentation summary: DSC (%) mean ± std over seeds, generators x N."""
    counts = summary["counts"]
    rows = [[name] + [mean_std(by_count[str(n)]["mean"], by_count[str(n)]["std"], 100, 1) for n in counts]
            for name, by_count in summary["dice"].items()]
    unet = summary["unet"]
    sampling = summary["sampling"]
    sections = [
        f"# Downstream augmentation: U-Net DSC (%) on {_test_patients_title(summary)}",
        *_not_held_out_lines(summary),
        f"Data: {summary['data']}.",
        _table(["generator \\ synthetic N", *map(str, counts)], rows),
        f"Mean ± sample standard deviation (ddof 1) over {len(summary['seeds'])} seed(s) {summary['seeds']}; "
        "per run, the DSC is the mean over the test slices (prediction thresholded at "
        f"{unet['prediction_threshold']}). N = 0 is the same real-only runs for every generator.",
        f"U-Net: {_unet_description(unet)}. Synthetic pairs: {_LATENT_SOURCES[sampling.get('prior', 'auto')]}, mask threshold "
        f"{sampling['mask_threshold']}, kept when "
        f"the mask has >= {sampling['min_mask_area']} px{_decoded_on(sampling)}; {summary['nested_subsets']}. "
        f"Total U-Net training time {summary['total_train_seconds']} s.",
    ]
    return "\n\n".join(sections + _gain_sections(summary) + _equal_update_sections(summary)) + "\n"


def _test_patients_title(summary: dict[str, Any]) -> str:
    """"held-out patients", or "the test patients (NOT held-out)" when a generator was trained on some of them."""
    return "the test patients (NOT held-out)" if summary.get("seen_in_training") else "held-out patients"


def _not_held_out_lines(summary: dict[str, Any]) -> list[str]:
    """The warning of a report whose generators were trained on some of its test patients (none otherwise)."""
    seen = summary.get("seen_in_training") or {}
    if not seen:
        return []
    named = "; ".join(f"{name} on {', '.join(patients)}" for name, patients in seen.items())
    return [f"**NOT held-out**: generators were trained on test patients ({named}, as their model cards or run "
            "configs list them). Their scores here include training patients and measure fit, not generalisation."]


def _unet_description(unet: dict[str, Any]) -> str:
    from .segmentation import UNetSettings

    return UNetSettings(**{**unet, "channels": tuple(unet["channels"])}).describe()


def interval_text(entry: dict[str, Any], scale: float = 100.0, digits: int = 1, signed: bool = True) -> str:
    """``"+mean [low, high]"`` of a :func:`~.augmentation.interval95` entry (the mean alone without bounds); with
    ``signed=False`` no plus signs (for values rather than differences)."""
    sign = "+" if signed else ""
    if entry["mean"] is None:  # nothing finished yet
        return "–"
    text = f"{entry['mean'] * scale:{sign}.{digits}f}"
    if entry["low"] is None:
        return text
    return f"{text} [{entry['low'] * scale:{sign}.{digits}f}, {entry['high'] * scale:{sign}.{digits}f}]"


def _gain_sections(summary: dict[str, Any]) -> list[str]:
    """The paired-gain table (generator x N, points of DSC, 95 % interval over seeds), when there is one."""
    gains = summary.get("paired_gain")
    if not gains:
        return []
    counts = list(next(iter(gains.values())))
    rows = [[name] + [interval_text(by_count[n]) for n in counts] for name, by_count in gains.items()]
    baselines = sorted({entry["baseline"] for by_count in gains.values() for entry in by_count.values()})
    return [
        "## Gain over real-only, paired by seed",
        _table(["generator \\ synthetic N", *counts], rows),
        f"DSC points: mean over seeds of (generator run - baseline run of the same seed), with a two-sided 95 % "
        f"Student-t interval over seeds; baseline: {', '.join(baselines)}. An interval that excludes 0 is a gain "
        "(or loss) the seeds agree on.",
    ]


def _decoded_on(sampling: dict[str, Any]) -> str:
    """Where the pairs were decoded, when not on the CPU (recorded only then: see SamplingSettings.identity)."""
    return f", decoded on {sampling['device']}" if "device" in sampling else ""


def _equal_update_sections(summary: dict[str, Any]) -> list[str]:
    """The equal-update control's table and its reading, when the summary has one."""
    control = summary.get("equal_update_control")
    if not control:
        return []
    counts = list(control)
    rows = [["real-only, equal updates"] + [mean_std(control[n]["mean"], control[n]["std"], 100, 1) for n in counts],
            ["its epochs"] + [str(control[n]["epochs"]) for n in counts]]
    return [
        "## Equal-update control",
        _table(["as many U-Net updates as with N synthetic pairs", *counts], rows),
        "Real train slices only, trained for as many optimiser updates as a run with N synthetic pairs (the fixed "
        "epoch count makes added pairs also add updates): a generator's gain over this row at the same N is what "
        "its pairs add beyond the longer training.",
    ]


# What each sampling prior means, for the reports ("auto" is left out of recorded settings: see SamplingSettings).
_LATENT_SOURCES = {
    "auto": "z from each pipeline's default prior (its fitted latent prior when it has one, else N(0, I))",
    "standard": "z ~ N(0, I)",
    "fitted": "z from each pipeline's fitted latent prior",
}


def _error_bars(by_count: dict[str, Any], counts: list[Any]) -> list[list[float]]:
    """Lower and upper error-bar lengths (DSC points) of the 95 % intervals at each N (0 without an interval)."""
    entries = [by_count[str(n)] for n in counts]
    return [[100 * (e["mean"] - e["low"]) if e.get("low") is not None else 0.0 for e in entries],
            [100 * (e["high"] - e["mean"]) if e.get("high") is not None else 0.0 for e in entries]]


def plot_augmentation(summary: dict[str, Any], path: Path) -> None:
    """PNG plot, written atomically: DSC (%) vs N per generator with 95 % intervals of the mean over seeds; beside
    it, when the summary has paired gains, each generator's gain over real-only with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window
    import matplotlib.pyplot as plt

    gains = summary.get("paired_gain") or {}
    figure, axes = plt.subplots(1, 2 if gains else 1, figsize=(11.5 if gains else 6.4, 4.2), dpi=120, squeeze=False)
    axis = axes[0, 0]
    counts = summary["counts"]
    for name, by_count in summary["dice"].items():
        means = [100 * by_count[str(n)]["mean"] for n in counts]
        axis.errorbar(counts, means, yerr=_error_bars(by_count, counts), marker="o", capsize=3, label=name)
    control = summary.get("equal_update_control", {})
    if control:
        control_counts = [int(n) for n in control]
        axis.errorbar(control_counts, [100 * control[str(n)]["mean"] for n in control_counts],
                      yerr=_error_bars(control, control_counts), color="black",
                      linestyle="--", marker="s", capsize=3, label="real-only, equal updates")
    axis.set_xlabel("number of synthetic pairs N")
    axis.set_ylabel("test DSC (%)")
    axis.set_title(f"U-Net DSC vs synthetic data ({len(summary['seeds'])} seeds, 95 % intervals)")
    axis.grid(alpha=0.3)
    axis.legend()
    if gains:
        gain_axis = axes[0, 1]
        offsets = np.linspace(-0.15, 0.15, len(gains)) if len(gains) > 1 else [0.0]
        for offset, (name, by_count) in zip(offsets, gains.items()):
            positions = np.arange(len(by_count)) + offset
            means = [100 * entry["mean"] for entry in by_count.values()]
            gain_axis.errorbar(positions, means, yerr=_error_bars(by_count, list(by_count)), marker="o",
                               linestyle="none", capsize=3, label=name)
        gain_axis.axhline(0.0, color="black", linewidth=0.8)
        gain_axis.set_xticks(range(len(next(iter(gains.values())))), list(next(iter(gains.values()))))
        gain_axis.set_xlabel("number of synthetic pairs N")
        gain_axis.set_ylabel("DSC gain over real-only (points)")
        gain_axis.set_title("paired gain by seed, 95 % intervals")
        gain_axis.grid(alpha=0.3)
        gain_axis.legend()
    _save_figure(figure, path)


def image_quality_markdown(summary: dict[str, Any]) -> str:
    """Markdown report of an image-quality summary: one row per generator; metrics not computed say why."""
    header = ["generator", "PSNR (dB)", "SSIM", "FID", "KID x 1000", "TSTR DSC (%)", "TSTR / real-only",
              "MS-SSIM diversity", "tumour-area JSD"]
    rows = []
    notes = []
    for name, result in summary["results"].items():
        fid = NOT_COMPUTED if result["fid"] is None else f"{result['fid']:.1f}"
        kid = (NOT_AVAILABLE if result.get("kid_mean") is None
               else mean_std(result["kid_mean"], result["kid_std"], scale=1000))
        tstr = NOT_AVAILABLE if result.get("tstr_dice") is None else f"{100 * result['tstr_dice']:.1f}"
        ratio = NOT_AVAILABLE if result.get("tstr_ratio") is None else f"{result['tstr_ratio']:.2f}"
        diversity = NOT_COMPUTED if result["ms_ssim_diversity"] is None else f"{result['ms_ssim_diversity']:.3f}"
        rows.append([name, mean_std(result["psnr_mean"], result["psnr_std"]),
                     mean_std(result["ssim_mean"], result["ssim_std"], digits=3), fid, kid, tstr, ratio, diversity,
                     f"{result['tumour_area_jsd']:.3f}"])
        notes += [f"- {name}: {metric} not computed: {reason}" for metric, reason in result["not_computed"].items()]
    settings = summary["settings"]
    reference = summary.get("tstr_reference_dice")
    tstr = (f"TSTR: a U-Net ({_unet_description(settings['tstr_unet'])}, seed {settings['seed']}) trained on the "
            "samples alone and scored on the real test slices (mean DSC); its reference, the same protocol trained on "
            "the real train slices, scores " + (f"{100 * reference:.1f} %" if reference is not None else
                                                 "nothing here (no --train-patients given)") +
            "; the ratio is the number to quote." if "tstr_unet" in settings else "TSTR: not run (--no-tstr).")
    text = [
        "# Image quality of generated pairs",
        *_not_held_out_lines(summary),
        f"Data: {summary['data']}.",
        _table(header, rows),
        f"{settings['num_samples']} samples per generator (seed {settings['seed']}; mask threshold "
        f"{settings['sampling']['mask_threshold']}, kept when the mask has >= {settings['sampling']['min_mask_area']} "
        f"px) against {summary['num_real_test_slices']} real test slices. PSNR/SSIM: each sample against a randomly "
        "drawn unpaired real test slice, mean ± std over the pairs. FID: Inception-v3 features of all samples vs all "
        "real test slices (lower is better). KID: unbiased polynomial-kernel MMD^2 of the same features, mean ± std "
        f"over {settings.get('kid_subsets', 100)} random subsets of min({settings.get('kid_subset_size', 1000)}, set "
        "size) per set (lower is better; unbiased, so comparable across sample counts, unlike FID). "
        f"MS-SSIM diversity: mean over {settings['diversity_pairs']} random pairs of distinct samples (lower is more "
        "diverse). Tumour-area JSD: Jensen-Shannon divergence (base 2) of the mask-area histograms, bins of "
        f"{settings['area_bin_width']} px from {settings['area_bins_start']} px. {tstr}",
    ]
    if notes:
        text.append("\n".join(notes))
    return "\n\n".join(text) + "\n"


def likelihood_markdown(summary: dict[str, Any]) -> str:
    """Markdown report of a likelihood summary: ``log p(x, m)`` and ELBO per generator, and paired differences."""
    header = ["generator", "K", "step size (min / median / max)", "beta_0", "log p(x, m) (nats/slice)",
              "ELBO (nats/slice)", "ELBO flow off", "flow gain ± s.e.", "log p per pixel"]
    rows = []
    for name, result in summary["results"].items():
        flow = result.get("flow")
        gain = result.get("flow_gain_mean")
        rows.append([
            name, str(result["n_leapfrog"]),
            NOT_AVAILABLE if not flow else
            f"{flow['step_size_min']:.3g} / {flow['step_size_median']:.3g} / {flow['step_size_max']:.3g}",
            NOT_AVAILABLE if not flow else f"{flow['beta_zero']:.3f}",
            mean_std(result["log_likelihood_mean"], result["log_likelihood_std"], digits=1),
            mean_std(result["elbo_mean"], result["elbo_std"], digits=1),
            NOT_AVAILABLE if gain is None else f"{result['elbo_flow_off_mean']:.1f}",
            NOT_AVAILABLE if gain is None else f"{gain:.1f} ± {result['flow_gain_standard_error'] or 0:.1f}",
            f"{result['log_likelihood_per_pixel']:.4f}",
        ])
    settings = summary["settings"]
    first = next(iter(summary["results"].values()))
    importance_slices = first.get("importance_slices", first["num_slices"])
    text = [
        "# Log-likelihood on the test patients, NOT held-out" if summary.get("seen_in_training")
        else "# Held-out log-likelihood",
        *_not_held_out_lines(summary),
        f"Data: {summary['data']}.",
        _table(header, rows),
        f"log p(x, m): importance-sampled with {settings['num_importance_samples']} samples per slice through each "
        f"model's own flow (seed {settings['seed']}), on {importance_slices} of the {first['num_slices']} test slices "
        f"(evenly spaced); ELBO: {settings.get('elbo_draws', 1)} draw(s) per slice on every slice, with the flow on "
        "and off (n_leapfrog = 0, same weights, same z_0 draws): the flow gain is their paired difference. Mean ± std "
        "over the test slices (the spread is mostly between slices, not estimator noise; compare generators with the "
        "paired differences).",
    ]
    differences = summary.get("paired_differences") or {}
    if differences:
        text.append(_table(["paired difference, same slices", "mean (nats/slice)", "standard error"],
                           [[name, f"{value['mean']:.2f}", NOT_AVAILABLE if value["standard_error"] is None
                             else f"{value['standard_error']:.2f}"] for name, value in differences.items()]))
    return "\n\n".join(text) + "\n"


def scarcity_markdown(summary: dict[str, Any]) -> str:
    """Markdown report of a scarcity summary: DSC per K and arm, the paired gains and the generators head to head,
    with 95 % intervals."""
    arms = summary["arms"]
    results = summary["results"]

    def cell(entry: dict[str, Any], planned: int, signed: bool = True) -> str:
        done = "" if entry["num_seeds"] == planned else f" ({entry['num_seeds']}/{planned} runs)"
        return interval_text(entry, signed=signed) + done

    dsc_rows = [[k, str(entry["num_units"])] + [cell(entry["dice"][arm], entry["num_units"], False) for arm in arms]
                for k, entry in results.items()]
    gain_names = [arm for arm in arms if arm in next(iter(results.values()))["gain"]] + ["classic"]
    gain_rows = [[k] + [cell(entry["gain"][name], entry["num_units"]) for name in gain_names]
                 for k, entry in results.items()]
    head_to_head_names = list(next(iter(results.values())).get("head_to_head", {}))  # none with one kind
    head_to_head_rows = [[k] + [cell(entry["head_to_head"][name], entry["num_units"]) for name in head_to_head_names]
                         for k, entry in results.items()]
    head_to_head = ([] if not head_to_head_names else
                    ["## Generators head to head (DSC points, same draw, seed and N)",
                     _table(["K", *head_to_head_names], head_to_head_rows)])
    draw_rows = [[k, f"{entry['draw']}: {', '.join(entry['patients'])}"]
                 + [" / ".join(NOT_AVAILABLE if value is None else f"{100 * value:.1f}"
                               for value in entry["dice"][arm].values()) for arm in arms]
                 for k, result in results.items() for entry in result["draws"]]
    split = summary["split"]
    gain_header = [f"{name} - real-only+classic" if name != "classic" else "classic - none" for name in gain_names]
    partial = ([] if summary.get("complete", True) else
               ["**Partial report: the study is not finished.** A cell over fewer runs than planned says how many "
                "(done/planned); – = none finished yet. Rerun the study command to go on."])
    return "\n\n".join([
        "# Data scarcity: U-Net DSC (%) with K real training patients",
        *partial,
        f"Split {split['name']}: {split['how']}. Test patients ({len(split['test'])}), outside every draw: "
        f"{', '.join(split['test'])}.",
        _table(["K", "draws x seeds", *arms], dsc_rows),
        "## Paired gains (DSC points, same draw and seed)",
        _table(["K", *gain_header], gain_rows),
        *head_to_head,
        f"Mean over draws x seeds (seeds {summary['seeds']}) with a two-sided 95 % Student-t interval; an interval "
        "that excludes 0 is a gain (or loss) the runs agree on. Generators are trained on the K patients of each draw "
        f"only (recipes: {_recipes_text(summary['recipes'])}{_overrides_text(summary)}); synthetic pairs: "
        f"{_LATENT_SOURCES[summary['sampling'].get('prior', 'auto')]}, kept when the mask has >= "
        f"{summary['sampling']['min_mask_area']} px.",
        f"U-Net: {_unet_description(summary['unet'])}; classic augmentation: {summary['classic_augmentation']}. "
        f"Total U-Net training time {summary['total_unet_train_seconds']} s.",
        f"## DSC (%) of each run, by draw (seeds {' / '.join(str(seed) for seed in summary['seeds'])})",
        _table(["K", "draw: patients", *arms], draw_rows),
    ]) + "\n"


def _recipes_text(recipes: dict[str, Any]) -> str:
    """``kind: config (steps by K) -> ...`` for each recipe."""
    return "; ".join(f"{kind}: " + " -> ".join(f"{stage['config']} ({stage['steps_at_k']} steps by K)"
                                              for stage in stages) for kind, stages in recipes.items())


def _overrides_text(summary: dict[str, Any]) -> str:
    """``, with trainer overrides a=b, c=d`` when the study changed the recipes, else nothing."""
    overrides = summary.get("generator_overrides") or []  # absent from reports written before the field existed
    return f", with trainer overrides {', '.join(overrides)}" if overrides else ""


def plot_scarcity(summary: dict[str, Any], path: Path) -> None:
    """PNG plot, written atomically: the paired DSC gain vs K (log axis) of each generator arm over real-only with
    classic augmentation, and of classic augmentation over none, with 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = summary["results"]
    ks = [int(k) for k in results]
    names = list(next(iter(results.values()))["gain"])
    figure, axis = plt.subplots(figsize=(6.4, 5.0), dpi=120)
    for offset, name in zip(np.linspace(-0.06, 0.06, len(names)), names):
        done = [k for k in ks if results[str(k)]["gain"][name]["mean"] is not None]  # a study in progress
        if not done:
            continue
        entries = {str(k): results[str(k)]["gain"][name] for k in done}
        positions = [k * (1 + offset) for k in done]
        label = "classic augmentation - none" if name == "classic" else f"{name} - real-only+classic"
        axis.errorbar(positions, [100 * entries[str(k)]["mean"] for k in done], yerr=_error_bars(entries, done),
                      marker="o", capsize=3, label=label)
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_xticks(ks, [str(k) for k in ks])
    axis.set_xticks([], minor=True)  # a log axis labels minor ticks ("3 x 10^0") between the Ks
    axis.set_xlabel("real training patients K")
    axis.set_ylabel("DSC gain (points)")
    status = "" if summary.get("complete", True) else ", PARTIAL: study not finished"
    axis.set_title(f"gain vs K ({summary['split']['name']}, 95 % intervals over draws x seeds{status})", fontsize=9)
    axis.grid(alpha=0.3)
    if axis.lines:  # below the axes: inside, it hides the points of some K whatever corner it takes
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    _save_figure(figure, path)


def _save_figure(figure: Any, path: Path) -> None:
    """Lay ``figure`` out, write it to ``path`` as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    try:
        with atomic_file(path, "wb") as file:
            figure.savefig(file, format="png")
    finally:
        plt.close(figure)
