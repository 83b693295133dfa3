"""How well the tracks determine an estimated focal length (`FocalUncertainty`).

Without given intrinsics the SfM labeler estimates one focal per clip; whether it is trusted:
the least-squares cost with the focal fixed at f (1 +- 5 %), every other unknown
re-optimised, gives the focal's signal s, the RMS displacement of the n observations that a
5 % focal error leaves. It is small, since a translating camera determines the focal only
through its rotation. Random track errors (sigma from the residual) give a relative standard
deviation of log(1.05) sigma / (sqrt(n) s), but track errors are correlated, along a track
(what the tracker leaves of drift and scale bias) and across a region (tracks of a moving
object or of occlusion junctions that pass the outlier test and pull the focal), and real
focal errors exceed that figure several times. So the spread comes from a jackknife over
image regions (the fit without the tracks of one of `focal_jackknife_grid`^2 regions at a
time; at least the random-error spread), and a systematic error of `focal_bias_px` (b) along
the signal, which no resampling sees, adds log(1.05) b / s in quadrature. Above
`max_focal_rel_std` the clip is rejected (`intrinsics_unobservable`), or, with
`unknown_focal` "prior", falls back to the prior focal (`labelers.sfm.focal_prior`). The
jackknife (9 fits) runs only where the cheaper random-plus-systematic figure passes.
Bundle adjustment gives the cost profile and jackknife of a general motion
(`labelers.sfm.general`), the rotation-only homographies those of a pure rotation
(`labelers.sfm.rotation`). Measured: docs/benchmarks.md, "Labeler design measurements",
SfM camera: focal uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelers.sfm.config import SfmConfig


FOCAL_STEP = 0.05  # relative focal change of the cost profile


@dataclass(frozen=True)
class FocalUncertainty:
    """How well the tracks determine an estimated focal length (module docstring).

    Attributes:
        signal_px: RMS displacement of the observations that a 5 % focal change causes when
            every other unknown is re-optimised (what the focal leaves in the data).
        random_px: RMS track error along that displacement from independent errors,
            sigma / sqrt(n) over n observations.
        bias_px: systematic track error along it (`SfmConfig.focal_bias_px`).
        jackknife_rel_std: relative standard deviation of the focal from the spatial
            jackknife, NaN when not computed.
    """

    signal_px: float
    random_px: float
    bias_px: float
    jackknife_rel_std: float = float("nan")

    @property
    def rel_std(self) -> float:
        """Relative standard deviation of the focal: the spread (the jackknife's, at least that
        of independent errors) and the systematic error, added in quadrature."""
        if not self.signal_px > 0:
            return float("inf")
        scale = np.log1p(FOCAL_STEP) / self.signal_px  # relative focal change per pixel of signal
        spread = max(scale * self.random_px, np.nan_to_num(self.jackknife_rel_std, nan=0.0))
        return float(np.hypot(spread, scale * self.bias_px))

    def diagnostics(self) -> dict[str, float | None]:
        return {
            "focal_rel_std": self.rel_std,
            "focal_signal_px": self.signal_px,
            "focal_jackknife_rel_std": None if np.isnan(self.jackknife_rel_std) else self.jackknife_rel_std,
        }


def focal_uncertainty_from_costs(
    cost0: float, cost_up: float, cost_down: float, num_obs: int, dof: int, bias_px: float
) -> FocalUncertainty:
    """Focal uncertainty from a least-squares cost (sum of squared 2D errors of `num_obs`
    observations) at f and at f (1 + FOCAL_STEP)^(+-1), other unknowns re-optimised.

    Quadratic model in log f: an offset of log(1 + FOCAL_STEP) raises the cost by num_obs s^2,
    s the signal. Independent track errors of variance sigma^2 per coordinate (from the
    residual and `dof`) move the estimate like an error of sigma / sqrt(num_obs) along the
    signal would.
    """
    sigma = np.sqrt(max(cost0 / max(dof, 1), 1e-24))
    signal = float(np.sqrt(max(0.5 * (cost_up + cost_down) - cost0, 0.0) / max(num_obs, 1)))
    return FocalUncertainty(signal, float(sigma / np.sqrt(max(num_obs, 1))), bias_px)


def jackknife_log_std(log_focals: np.ndarray) -> float:
    """Delete-one-group jackknife standard deviation of log f from the G leave-one-out fits."""
    num = len(log_focals)
    if num < 2:
        return float("inf")
    return float(np.sqrt((num - 1) / num * np.sum((log_focals - log_focals.mean()) ** 2)))


def focal_problem(focal_px: float, fov_x: float, focal: FocalUncertainty, cfg: SfmConfig) -> str:
    """Why an estimated focal is not trusted (the message of an intrinsics_unobservable failure)."""
    computed = not np.isnan(focal.jackknife_rel_std)
    jackknife = f"{focal.jackknife_rel_std:.3f}" if computed else "not computed"
    at_least = "" if computed else "at least "  # the jackknife only adds to the spread
    if np.isfinite(focal.rel_std):
        spread = f"with a relative standard deviation of {at_least}{focal.rel_std:.3f}"
    else:  # no signal at all: a number would be infinite
        spread = "whose changes have no measurable effect on the tracks"
    return (
        f"the tracks do not determine the focal length: {focal_px:.1f} px (horizontal field of view {fov_x:.0f} deg) "
        f"{spread} (a 5 % change moves the tracks by {focal.signal_px:.4f} px RMS; region jackknife {jackknife}); "
        f"limits: std <= {cfg.max_focal_rel_std}, field of view in [{cfg.min_fov_x_deg}, {cfg.max_fov_x_deg}] deg; "
        "give intrinsics for this clip"
    )
