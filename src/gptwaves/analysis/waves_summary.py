"""JSON-ready summary of one tap's wave analysis (plain types, no NaN): what
``waves/<name>/summary.json`` holds per tap (docs/method.md, Coherence and Coherence against its
floors).
"""

from __future__ import annotations

import numpy as np

from ..jsonable import finite_or_none

from . import coherence_nulls as _nulls

__all__ = ["tap_summary", "coherence_summary", "probe_summary"]


_num = finite_or_none


def _list(v, nd=6):
    return None if v is None else [_num(round(float(a), nd)) for a in np.asarray(v, dtype=float).ravel()]


def _surrogate_json(sur: dict) -> dict:
    out = {k: sur.get(k) for k in ("on", "n_surrogates", "n_boot", "n_ci_surrogates", "alpha")}
    # the bound of the rank p-value, named for what it is (docs/method.md, "Coherence against its floors")
    out["p_rank_bound"] = sur.get("min_p_value")
    for k, _ in _nulls.ORDER_KEYS:
        d = sur.get(k, {})
        ci = d.get("ci")
        out[k] = {"observed": _num(d.get("observed")), "surrogate_mean": _num(d.get("surrogate_mean")),
                  "surrogate_sd": _num(d.get("surrogate_sd")), "surrogate_q95": _num(d.get("surrogate_q95")),
                  "excess": _num(d.get("excess")), "z": _num(d.get("z")),
                  "ci": None if ci is None else [_num(ci[0]), _num(ci[1])], "ci_method": d.get("ci_method"),
                  "se": _num(d.get("se")), "p_value": _num(d.get("p_value")), "p_rank": _num(d.get("p_rank")),
                  "significant": bool(d.get("significant", False)),
                  "loo": _list(d.get("loo"), 8) if k == "mean_abs_corr" else None}
    return out


def _gain_json(g: dict | None) -> dict | None:
    if not g:
        return None
    diff = {}
    for k, _ in _nulls.ORDER_KEYS:
        d = g["raw_minus_normalised"].get(k, {})
        ci = d.get("ci")
        diff[k] = {"difference": _num(d.get("difference")), "se": _num(d.get("se")),
                   "ci": None if ci is None else [_num(ci[0]), _num(ci[1])]}
    return {**{k: _num(v) for k, v in g["order_parameters"].items()},
            "induced": {k: _num(v) for k, v in g["order_parameters_induced"].items()},
            "surrogate": _surrogate_json(g["surrogate"]), "raw_minus_normalised": diff}


def probe_summary(p: dict | None) -> dict | None:
    """JSON-ready summary of :func:`gptwaves.analysis.probe.space_probe` output (the ``probe`` entry
    of :func:`tap_summary`)."""
    if not p:
        return None
    ci = p.get("ci")
    return {"r2": _num(p.get("r2")), "ci": None if ci is None else [_num(ci[0]), _num(ci[1])],
            "se": _num(p.get("se")), "loo": _list(p.get("loo"), 8),
            "rhythm_similarity": _num(p.get("rhythm_similarity")),
            "null_r2_q95": _num(p.get("null_r2_q95")), "null_rhythm_q95": _num(p.get("null_rhythm_q95")),
            "null_r2": _list(p.get("null_r2")), "n_null": int(np.size(p.get("null_r2", []))),
            "space_rate": _num(p.get("space_rate")), "ridge_penalty": _num(p.get("ridge_penalty")),
            "n_folds": int(p.get("n_folds", 0)), "n_fit_rows": int(p.get("n_fit_rows", 0)),
            "n_eval_steps": int(p.get("n_eval_steps", 0)), "metric": "out-of-fold R^2"}


def coherence_summary(coh: dict) -> dict:
    """JSON-ready coherence part of a tap summary from :func:`coherence_with_nulls` (or
    :func:`analyze_tap`) output: raw order parameters, ``induced``, ``surrogate`` and
    ``gain_normalised`` (see :func:`tap_summary`)."""
    return {**{k: _num(v) for k, v in coh["order_parameters"].items()},
            "induced": {k: _num(v) for k, v in coh.get("order_parameters_induced", {}).items()},
            "surrogate": _surrogate_json(coh["surrogate"]) if "surrogate" in coh else None,
            "gain_normalised": _gain_json(coh.get("gain_normalised"))}


def tap_summary(r: dict) -> dict:
    """JSON-ready summary of one :func:`analyze_tap` result (plain types, no NaN).

    Returns
    -------
    dict
        Raw order parameters ``mean_abs_corr``, ``lambda_max_share``,
        ``participation_ratio`` (kept channels, as in docs/method.md, Coherence);
        ``induced`` (the same after removing the evoked component; claims use
        these); ``evoked_share``, ``evoked_share_chance``; ``surrogate``
        (induced: per order parameter ``observed``, ``surrogate_mean``,
        ``surrogate_sd``, ``surrogate_q95``, ``excess``, ``z``, ``ci``, ``se``, ``p_value``
        (unfloored Gaussian tail), ``p_rank`` (rank test, bounded by ``p_rank_bound``),
        ``significant``, ``loo`` for mean |R|); ``gain_normalised`` (the same after gain
        normalisation, plus ``raw_minus_normalised`` paired CIs); ``probe`` (space probe:
        ``r2``, ``ci``, ``loo``, ``rhythm_similarity``, ``null_r2_q95``, ``null_rhythm_q95``, ...);
        ``n_constant``, ``constant_channels``;
        ``n_clusters`` (gated: 1 = no cluster structure), ``silhouette``
        (None when k = 1), ``cluster_structure``, ``best_k``,
        ``best_silhouette``, ``null_silhouette_q95``; ``label_counts``,
        ``n_labelled``, ``n_space_labelled`` (space + next:space),
        ``label_classes_eligible`` (list of keys with >= min_events steps in
        and out), ``class_events`` (key -> [n_in, n_out]);
        ``max_abs_d_space``, ``max_abs_d_by_class``, ``space_channels``,
        ``top_channels``; ``median_period_acf``, ``median_period_psd`` (over
        significant channels), ``n_oscillating`` (significant against red
        noise), ``n_period_acf_unfiltered`` (channels with any ACF period),
        ``red_noise_threshold``, ``red_noise_dof``; ``max_space_similarity``,
        ``space_similarity_baseline`` (max over channels of the AR(1)-twin
        similarity), ``max_space_similarity_excess`` (max over channels of
        similarity - AR(1)-twin similarity), ``n_samples``, ``n_steps``,
        ``n_channels``.
    """
    cl = r["clustering"]
    return {
        **coherence_summary(r),
        "evoked_share": _num(r.get("evoked_share")),
        "evoked_share_chance": _num(r.get("evoked_share_chance")),
        "probe": probe_summary(r.get("probe")),
        "n_constant": int(r.get("n_constant", 0)),
        "constant_channels": [int(c) for c in np.asarray(r.get("constant_channels", []))[:50]],
        "n_clusters": int(cl["k"]),
        "silhouette": _num(cl.get("silhouette")),
        "cluster_structure": bool(cl.get("structure", int(cl["k"]) > 1)),
        "best_k": int(cl.get("best_k", cl["k"])),
        "best_silhouette": _num(cl.get("best_silhouette", cl.get("silhouette"))),
        "null_silhouette_q95": _num(cl.get("null_silhouette_q95")),
        **_function_summary(r["function"]),
        **_oscillation_summary(r),
        "n_samples": int(r["n_samples"]), "n_steps": int(r["n_steps"]), "n_channels": int(r["n_channels"]),
    }


def _function_summary(f: dict) -> dict:
    """The channel-label entries of :func:`tap_summary`, from the ``function`` entry of the result
    (:func:`~gptwaves.analysis.channel_labels.channel_function`)."""
    labels = [str(x) for x in np.asarray(f["label"]).tolist()]
    counts: dict[str, int] = {}
    for lab in labels:
        if lab:
            counts[lab] = counts.get(lab, 0) + 1
    classes = list(f["classes"])
    si = classes.index("space")
    d_space = np.nan_to_num(np.abs(np.asarray(f["d_current"], dtype=float)[si]))
    d_space_next = np.nan_to_num(np.abs(np.asarray(f["d_next"], dtype=float)[si]))
    best_d = np.asarray(f["best_d"], dtype=float)
    best = np.nan_to_num(np.abs(best_d))
    top = np.argsort(-best)[:10]
    keys = classes + ["next:" + c for c in classes]
    n_in = np.asarray(f.get("n_in", np.zeros(len(keys))), dtype=int)
    n_out = np.asarray(f.get("n_out", np.zeros(len(keys))), dtype=int)
    elig = np.asarray(f.get("eligible", np.ones(len(keys), bool)), dtype=bool)
    return {
        "label_counts": counts,
        "n_labelled": int(sum(counts.values())),
        "n_space_labelled": int(counts.get("space", 0) + counts.get("next:space", 0)),
        "label_classes_eligible": [kk for kk, e in zip(keys, elig) if e],
        "class_events": {kk: [int(a), int(b)] for kk, a, b in zip(keys, n_in, n_out)},
        "max_abs_d_space": float(max(d_space.max(initial=0), d_space_next.max(initial=0))),
        "max_abs_d_by_class": {c: float(np.nan_to_num(np.abs(np.concatenate(
            [np.asarray(f["d_current"], dtype=float)[i], np.asarray(f["d_next"], dtype=float)[i]]))).max(initial=0))
            for i, c in enumerate(classes)},
        "space_channels": [int(i) for i in np.argsort(-np.maximum(d_space, d_space_next))[:8]],
        "top_channels": [{"channel": int(i), "label": labels[i], "d": _num(best_d[i])} for i in top],
    }


def _oscillation_summary(r: dict) -> dict:
    """The period, red-noise and word-rhythm entries of :func:`tap_summary`."""
    per = np.asarray(r["period_acf"], dtype=float)
    per_psd = np.asarray(r.get("period_psd", np.full(len(per), np.nan)), dtype=float)
    sim = np.asarray(r["space_similarity"], dtype=float)
    sim_ar1 = np.asarray(r.get("space_similarity_ar1", np.full(sim.shape, np.nan)), dtype=float)
    exc = sim - sim_ar1
    red = r.get("red_noise", {})
    return {
        "median_period_acf": _num(np.nanmedian(per)) if np.isfinite(per).any() else None,
        "median_period_psd": _num(np.nanmedian(per_psd)) if np.isfinite(per_psd).any() else None,
        "n_oscillating": int(np.asarray(r.get("oscillating", np.isfinite(per))).sum()),
        "n_period_acf_unfiltered": int(np.isfinite(np.asarray(r.get("period_acf_all", per), dtype=float)).sum()),
        "red_noise_threshold": _num(red.get("threshold")),
        "red_noise_dof": _num(red.get("dof")),
        "max_space_similarity": _num(np.nanmax(sim)) if np.isfinite(sim).any() else None,
        "space_similarity_baseline": _num(np.nanmax(sim_ar1)) if np.isfinite(sim_ar1).any() else None,
        "max_space_similarity_excess": _num(np.nanmax(exc)) if np.isfinite(exc).any() else None,
    }
