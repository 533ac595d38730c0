"""Coherence analysis of hidden-state waves (docs/method.md, Coherence).

Pure functions on numpy arrays; numpy and scipy only (no torch, no file I/O).
:func:`analyze_tap` composes the analysis of one tap from the modules that hold each concern;
every public name of those modules stays importable from here.

Where each concern lives (modules of :mod:`gptwaves.analysis`)
--------------------------------------------------------------
wave_arrays
    Shapes, the mask of analysed steps, per-sample centring.
correlation
    Cross-channel correlation and the order parameters.
oscillation
    ACF, Welch PSD, periods, the red-noise test and the text's word rhythm.
clustering
    Channel clustering and its surrogate gate.
channel_labels
    Cohen's d of character classes, channel labels, event-triggered averages.
coherence
    The order parameters against their floors (evoked share, surrogates, gain).
repeatability
    Similarity of recordings of one tap, with baselines.
waves_summary
    The JSON-ready summary of one tap.
coherence_nulls
    The null models themselves.

Data conventions
----------------
x : float array, shape (S, T, C)
    Waves of one tap: S samples, T generation steps, C channels.
chars, next_chars : array of dtype '<U1', shape (S, T)
    The current input character c_t and the sampled next character c_{t+1}.
mask : bool array, shape (S, T), optional
    True for the steps to analyse (generated steps). In every sample the True
    steps must form one contiguous block (normally: False for the prompt, then
    True to the end). A sample without True steps is ignored. ``None`` means
    all steps.

Conventions decided here (the caller should know)
-------------------------------------------------
* All statistics use values centred per sample and channel (the mean over that
  sample's masked steps is subtracted), pooled over the masked steps of all
  samples (docs/method.md, Coherence).
* A channel is *constant* when its centred pooled standard deviation is at most
  ``1e-10`` times its largest absolute raw value (or exactly zero). Its
  correlation with other channels is defined as 0 and with itself as 1.
* ACFs are the biased estimator (statsmodels ``acf(adjusted=False)``) of the
  contiguous masked part of each sample, averaged over samples. A series that is
  constant within a sample has no ACF and is left out of that channel's average
  (NaN if it is constant in every sample).
"""

from __future__ import annotations

import numpy as np

from . import coherence_nulls as _nulls
from .channel_labels import (CHAR_CLASSES, _channel_function_c, _eta, channel_function, class_event_counts,
                             class_indicators, cohens_d, event_triggered_average)
from .clustering import best_silhouette, cluster_channels, silhouette_score
from .coherence import _coherence_c, coherence_with_nulls, gain_columns, induced_columns
from .coherence_nulls import WavesInputError
from .correlation import correlation_matrix, order_parameters
from .oscillation import (acf_similarity, autocorrelation, dominant_period_acf, dominant_period_psd, oscillations,
                          period_from_psd, space_reference, space_rhythm, welch_psd)
from .probe import space_probe
from .repeatability import acf_profile_similarity, compare_recordings, matrix_similarity
from .wave_arrays import _absmax, _as_mask, _as_waves, _bounds, _center0, center
from .waves_summary import coherence_summary, probe_summary, tap_summary

__all__ = [
    "CHAR_CLASSES",
    "center",
    "correlation_matrix",
    "order_parameters",
    "autocorrelation",
    "dominant_period_acf",
    "welch_psd",
    "period_from_psd",
    "dominant_period_psd",
    "space_reference",
    "acf_similarity",
    "silhouette_score",
    "cluster_channels",
    "class_indicators",
    "class_event_counts",
    "cohens_d",
    "channel_function",
    "event_triggered_average",
    "matrix_similarity",
    "acf_profile_similarity",
    "compare_recordings",
    "analyze_tap",
    "best_silhouette",
    "coherence_with_nulls",
    "induced_columns",
    "gain_columns",
    "oscillations",
    "tap_summary",
    "coherence_summary",
    "probe_summary",
    "WavesInputError",
]

#: Keys of :func:`analyze_tap`'s result taken from :func:`coherence_with_nulls`, then from
#: :func:`oscillations`, in the order the result lists them.
_COHERENCE_KEYS = ("n_constant", "constant_channels", "kept_channels", "R", "R_induced", "eigenvalues",
                   "order_parameters", "order_parameters_induced", "evoked_share", "evoked_share_channels",
                   "evoked_share_chance", "surrogate", "gain_normalised")
_OSCILLATION_KEYS = ("acf", "period_acf", "period_acf_all", "strength", "psd_freqs", "psd", "period_psd",
                     "period_psd_all", "red_noise", "oscillating")


# long: the docstring lists every key of the result; the body composes the concerns
def analyze_tap(
    x,
    chars,
    next_chars,
    mask=None,
    nlags=64,
    k=None,
    window=8,
    k_range=(2, 20),
    nperseg=256,
    threshold=1.0,
    n_surrogates=20,
    n_boot=200,
    ci_method="jackknife",
    n_ci_surrogates=2,
    seed=0,
    alpha=0.05,
    red_noise_level=0.99,
    min_events=30,
    probe_folds=5,
    probe_max_steps=64,
    probe_null=20,
) -> dict:
    """Full coherence analysis of one tap with its null models.

    docs/method.md, Coherence and Coherence against its floors.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
    chars, next_chars : array_like of str, shape (S, T)
    mask : array_like of bool, shape (S, T), optional
    nlags : int, optional
        ACF lags 0..nlags.
    k : int, optional
        Fixed number of clusters (default: best silhouette over ``k_range``,
        gated by the surrogates).
    window : int, optional
        Half-width of the event-triggered averages.
    k_range : (int, int), optional
    nperseg : int, optional
        Welch segment length.
    threshold : float, optional
        ``|d|`` needed for a channel label.
    n_surrogates : int, optional
        Sample-shuffle surrogates B (default 20; 0 disables the surrogate
        test, the cluster gate then reports no structure).
    n_boot : int, optional
        Bootstrap resamples of the excess CI with ``ci_method="bca"`` (0: none).
    ci_method : {"jackknife", "bca"}, optional
        Interval of the excess: delete-one-sample jackknife (default) or BCa bootstrap
        (see :func:`gptwaves.analysis.coherence_nulls.excess_with_ci` for the choice).
    n_ci_surrogates : int, optional
        Surrogates recomputed inside each jackknife/bootstrap replicate (paired CI).
    seed : int, optional
        Seed of surrogates and bootstrap.
    alpha : float, optional
        Level of the surrogate rank test.
    red_noise_level : float, optional
        Confidence level of the red-noise test (maximum over frequencies).
    min_events : int, optional
        Steps needed inside and outside a class for labels.
    probe_folds, probe_max_steps, probe_null : int, optional
        The space probe (:func:`gptwaves.analysis.probe.space_probe`): ``GroupKFold`` splits,
        training steps per sample, AR(1) red-noise replicates (0: none).

    Returns
    -------
    dict
        ``n_samples``, ``n_steps`` (masked steps pooled), ``n_channels``;
        ``n_constant``, ``constant_channels``, ``kept_channels`` (index arrays);
        ``R`` (C, C) raw correlation (constant channels 0 off the diagonal);
        ``R_induced`` (C, C) after removing the evoked component;
        ``eigenvalues`` (C_kept,) of the raw R of kept channels, descending;
        ``order_parameters`` (raw, kept channels) and
        ``order_parameters_induced``; ``evoked_share`` (mean over kept
        channels), ``evoked_share_channels`` (C,), ``evoked_share_chance``;
        ``surrogate``: :func:`gptwaves.analysis.coherence_nulls.excess_with_ci`
        of the *induced* order parameters (plus ``on: "induced"``);
        ``acf`` (C, nlags+1); ``period_acf`` (C,, NaN unless the channel
        oscillates significantly), ``period_acf_all`` (C,, before the test),
        ``strength`` (C,); ``psd_freqs``, ``psd``; ``period_psd`` (C,, period
        of the most significant red-noise peak, NaN unless significant),
        ``period_psd_all`` (C,, highest non-DC peak); ``red_noise`` (dict of
        :func:`~gptwaves.analysis.coherence_nulls.red_noise_test`);
        ``oscillating`` (C,) bool; ``space_acf``, ``space_similarity`` (C,),
        ``space_similarity_ar1`` (C,: the similarity the channel's AR(1) twin
        ``phi**lag`` has with the space ACF); ``clustering`` (gated, on
        ``R_induced`` of the kept channels: ``labels`` (C,, 0 for constant
        channels), ``k``, ``silhouette``, ``linkage``, ``order`` (kept channel
        indices in leaf order), ``structure``, ``best_k``,
        ``best_silhouette``, ``null_silhouette_q95``, ...); ``function`` (dict
        of :func:`channel_function` with ``min_events``); ``eta``,
        ``eta_counts``, ``eta_classes``, ``eta_lags``; ``gain_normalised`` (the order
        parameters, induced ones, their surrogate test and the paired jackknife CI of raw minus
        gain-normalised excess, after dividing each (sample, step) vector by its RMS over
        channels); ``probe`` (:func:`gptwaves.analysis.probe.space_probe`); ``settings``.

    Raises
    ------
    WavesInputError
        When ``x`` holds NaN or inf (one-line message).
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    chars = np.asarray(chars)
    next_chars = np.asarray(next_chars)
    if chars.shape != x.shape[:2] or next_chars.shape != x.shape[:2]:
        raise ValueError("chars and next_chars must have shape (S, T) like the waves")
    _bounds(mask)
    _nulls.check_finite(x)
    xc0 = _center0(x, mask)
    coh = _coherence_c(xc0, _absmax(x, mask), mask, k=k, k_range=k_range, n_surrogates=n_surrogates,
                       n_boot=n_boot, n_ci_surrogates=n_ci_surrogates, ci_method=ci_method, seed=seed, alpha=alpha,
                       x_raw=x)
    osc = oscillations(x, mask=mask, nlags=nlags, nperseg=nperseg, level=red_noise_level, exclude=coh["constant"])
    rhythm = space_rhythm(osc["acf"], chars, mask=mask, nlags=nlags)
    probe = space_probe(x, next_chars, mask=mask, n_folds=probe_folds, max_steps=probe_max_steps,
                        n_null=probe_null, nlags=min(int(nlags), 32), seed=seed)
    func = _channel_function_c(xc0, chars, next_chars, mask, threshold, min_events)
    classes = func["classes"]
    eta, counts = _eta(xc0, class_indicators(chars, classes), mask, window)
    return {
        "n_samples": int(mask.any(axis=1).sum()),
        "n_steps": int(mask.sum()),
        "n_channels": int(x.shape[2]),
        **{kk: coh[kk] for kk in _COHERENCE_KEYS},
        **{kk: osc[kk] for kk in _OSCILLATION_KEYS},
        **rhythm,
        "clustering": coh["clustering"],
        "function": func,
        "eta": eta,
        "eta_counts": counts,
        "eta_classes": classes,
        "eta_lags": np.arange(-int(window), int(window) + 1),
        "probe": probe,
        "settings": _tap_settings(nlags=nlags, k=k, window=window, k_range=k_range, nperseg=nperseg,
                                  threshold=threshold, n_surrogates=n_surrogates, n_boot=n_boot,
                                  ci_method=ci_method, n_ci_surrogates=n_ci_surrogates, seed=seed, alpha=alpha,
                                  red_noise_level=red_noise_level, min_events=min_events,
                                  probe_folds=probe_folds, probe_max_steps=probe_max_steps,
                                  probe_null=probe_null),
    }


def _tap_settings(*, nlags, k, window, k_range, nperseg, threshold, n_surrogates, n_boot, ci_method,
                  n_ci_surrogates, seed, alpha, red_noise_level, min_events, probe_folds, probe_max_steps,
                  probe_null) -> dict:
    """The ``settings`` entry of :func:`analyze_tap`'s result: its arguments as plain types."""
    return {"nlags": int(nlags), "k": None if k is None else int(k), "window": int(window),
            "k_range": [int(k_range[0]), int(k_range[1])], "nperseg": int(nperseg),
            "threshold": float(threshold), "n_surrogates": int(n_surrogates), "n_boot": int(n_boot),
            "ci_method": ci_method, "n_ci_surrogates": int(n_ci_surrogates), "seed": int(seed),
            "alpha": float(alpha), "red_noise_level": float(red_noise_level), "min_events": int(min_events),
            "probe_folds": int(probe_folds), "probe_max_steps": int(probe_max_steps),
            "probe_null": int(probe_null)}
