"""Front verification: after the trials, the feasible front re-scored by the full evaluator.

The proxy ranks Plans cheaply; the full evaluator (:class:`~dlmsearch.evaluators.FullEvaluator`: the
real sampler with the whole Plan, generations scored by the dense model, infill) costs about 20
times more and is the judge. After the trials :func:`verify_front` scores at most ``verify_front``
Plans of the feasible front with it (the whole front when it is that small, else the best by proxy
quality and others spread along it: :func:`plans_to_verify`) and stores each result as the study user attribute
``dlmsearch.verified.<trial number>`` (JSON: the verified score, the full evaluator's metrics, the
proxy's score beside it and the settings it was measured with). A finished trial's own user
attributes cannot change in Optuna's storages (``UpdateFinishedTrialError``), hence one study
attribute per trial.

- **Resuming verifies only what is new**: a trial verified with the same settings is kept.
- **Several workers, one verifier per Plan**: a Plan is claimed by creating the study
  ``STUDY.verify-claim.<number>`` (study names are unique in every storage, so the creation is
  atomic, as for the warm-start claim of :mod:`dlmsearch.search.workers`); the claimer scores it,
  stores the result and deletes the claim. Workers verify different Plans side by side, and a worker
  that finds nothing left to claim waits for the others' results (its report then shows them). A
  claim whose holder died (same host and its process gone, or older than
  ``DLMSEARCH_VERIFY_STALE_S`` seconds, default 3600) is taken over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from scipy import stats
from tqdm import tqdm

from dlmsearch.evaluators import BaseEvaluator
from dlmsearch.plan import Plan
from dlmsearch.search.attributes import METRICS_ATTR, PLAN_ATTR, VERIFIED_PREFIX
from dlmsearch.search.pareto import feasible_front
from dlmsearch.search.workers import quiet_optuna

logger = logging.getLogger("dlmsearch.search.verification")

CLAIM_INFIX = ".verify-claim."
#: Seconds between looks at the claims of other workers while waiting for their results.
POLL_S = 1.0


@dataclass(frozen=True)
class Verification:
    """One front Plan scored by the full evaluator, beside the proxy score the search gave it."""

    trial: int
    quality: float  # the full evaluator's score (lower is better; 0 = the dense model at one token per step)
    proxy_quality: float
    metrics: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)  # the FullSettings overrides it was measured with
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (what the study attribute holds)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verification:
        """Read back :meth:`to_json`'s data."""
        return cls(int(data["trial"]), float(data["quality"]), float(data["proxy_quality"]),
                   {k: float(v) for k, v in data.get("metrics", {}).items()}, dict(data.get("settings", {})),
                   float(data.get("seconds", 0.0)))


def verifications(study: optuna.Study) -> dict[int, Verification]:
    """Every stored verification of the study, by trial number."""
    return {int(key[len(VERIFIED_PREFIX):]): Verification.from_json(value)
            for key, value in study.user_attrs.items() if key.startswith(VERIFIED_PREFIX)}


def plans_to_verify(trials: Sequence[FrozenTrial], limit: int) -> list[FrozenTrial]:
    """The feasible front's trials to verify, in proxy quality order: all of them when at most ``limit``,
    else the best half of ``limit`` by proxy quality (where ``--pick`` lands) and the rest spread evenly
    over the others, the worst included (the range a user trades quality against cost over)."""
    front = sorted(feasible_front(trials), key=lambda t: (_proxy_quality(t), t.number))
    if limit <= 0 or len(front) <= limit:
        return front if limit > 0 else []
    best = limit - limit // 2
    others, spread = front[best:], limit - best
    if spread == 0:
        return front[:best]
    if spread == 1:
        return [*front[:best], others[-1]]
    picked = sorted({round(i * (len(others) - 1) / (spread - 1)) for i in range(spread)})
    return [*front[:best], *(others[i] for i in picked)]


def _proxy_quality(trial: FrozenTrial) -> float:
    return float(trial.user_attrs.get(METRICS_ATTR, {}).get("quality", float("inf")))


@dataclass(frozen=True)
class VerificationSummary:
    """What :func:`verify_front` did: the front Plans it covered, how many it scored itself, how many it
    found verified already, and the trials it could not verify."""

    results: dict[int, Verification]
    scored: int
    reused: int
    failed: tuple[int, ...]


def verify_front(study: optuna.Study, make_evaluator: Callable[[], BaseEvaluator], limit: int,
                 settings: Mapping[str, Any] | None = None, progress: bool = True) -> VerificationSummary:
    """Score the front's Plans (:func:`plans_to_verify`) with the evaluator ``make_evaluator`` builds
    (only when a Plan needs it) and store the results (see the module docstring). A Plan the evaluator
    fails on is logged and left unverified."""
    settings = dict(settings or {})
    targets = plans_to_verify(study.get_trials(deepcopy=False), limit)
    done = _current(study, settings)
    reused = sum(t.number in done for t in targets)
    pending = [t for t in targets if t.number not in done]
    evaluator: BaseEvaluator | None = None
    scored, failed = 0, []
    bar = tqdm(total=len(targets), initial=reused, desc="verify front (full evaluator)", unit="Plan",
               disable=not progress or not pending or None)
    with bar:
        while pending:
            waiting = []
            verified_now = _current(study, settings)  # by other workers since the last pass
            for trial in pending:
                if trial.number in verified_now:
                    bar.update(1)
                    continue
                claim = _claim(study, trial.number)
                if claim is None:
                    waiting.append(trial)
                    continue
                if trial.number in _current(study, settings):  # verified by a worker that released just now
                    _release(study, claim)
                    bar.update(1)
                    continue
                try:
                    evaluator = evaluator or make_evaluator()
                    result = _verify(evaluator, trial, settings)
                    # stored before the claim goes: a worker claiming it next then finds the result
                    study.set_user_attr(f"{VERIFIED_PREFIX}{trial.number}", result.to_json())
                except Exception as exc:  # the trials are stored: a failed verification must not lose them
                    logger.warning("trial %d not verified: %s: %s", trial.number, type(exc).__name__, exc)
                    failed.append(trial.number)
                    continue
                finally:
                    _release(study, claim)
                scored += 1
                bar.update(1)
            pending = waiting
            if pending:
                bar.set_postfix_str(f"waiting for {len(pending)} Plan(s) other workers verify")
                time.sleep(POLL_S)
    results = {n: v for n, v in _current(study, settings).items() if n in {t.number for t in targets}}
    if scored or failed:
        logger.info("verified %d front Plan(s) with the full evaluator (%d verified before, %d failed)", scored,
                    reused, len(failed))
    return VerificationSummary(results, scored, reused, tuple(failed))


def _current(study: optuna.Study, settings: Mapping[str, Any]) -> dict[int, Verification]:
    return {n: v for n, v in verifications(study).items() if v.settings == settings}


def _verify(evaluator: BaseEvaluator, trial: FrozenTrial, settings: dict[str, Any]) -> Verification:
    plan = Plan.from_dict(trial.user_attrs[PLAN_ATTR], source=f"trial {trial.number}")
    start = time.perf_counter()
    result = evaluator.evaluate(plan, "full")
    return Verification(trial.number, float(result.score), _proxy_quality(trial),
                        {k: float(v) for k, v in result.metrics.items()}, settings, time.perf_counter() - start)


def proxy_agreement(results: Sequence[Verification]) -> float | None:
    """Spearman rank correlation of the proxy's and the full evaluator's scores over verified Plans
    (None for fewer than 3 or when either score is constant): how far the proxy is to be trusted on
    this study's front."""
    if len(results) < 3:
        return None
    proxy, full = [v.proxy_quality for v in results], [v.quality for v in results]
    if len(set(proxy)) < 2 or len(set(full)) < 2:
        return None
    return float(stats.spearmanr(proxy, full).statistic)


# ---------------------------------------------------------------- claims


def claim_name(study: optuna.Study, number: int) -> str:
    """The claim study's name for verifying trial ``number``."""
    return f"{study.study_name}{CLAIM_INFIX}{number}"


def _claim(study: optuna.Study, number: int) -> int | None:
    """Create the claim study of trial ``number`` (taking over a stale one); its id, or None when another
    worker holds it."""
    storage, name = study._storage, claim_name(study, number)
    for _ in range(2):
        try:
            with quiet_optuna():  # the claim is internal: no "new study" line
                claim_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], name)
        except optuna.exceptions.DuplicatedStudyError:
            if not _drop_if_stale(storage, name):
                return None
            continue
        storage.set_study_user_attr(claim_id, "holder", {"host": socket.gethostname(), "pid": os.getpid(),
                                                         "time": time.time()})
        return claim_id
    return None


def _release(study: optuna.Study, claim_id: int) -> None:
    with contextlib.suppress(KeyError):  # taken over as stale and released by another worker meanwhile
        study._storage.delete_study(claim_id)


def _drop_if_stale(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """Delete the claim ``name`` when its holder is gone; whether it was deleted (or already gone)."""
    try:
        claim_id = storage.get_study_id_from_name(name)
    except KeyError:
        return True
    holder = storage.get_study_user_attrs(claim_id).get("holder")
    if not isinstance(holder, dict) or not _holder_gone(holder):
        return False
    logger.warning("taking over %s: its holder (host %s, process %s) is gone", name, holder.get("host"),
                   holder.get("pid"))
    with contextlib.suppress(KeyError):
        storage.delete_study(claim_id)
    return True


def _holder_gone(holder: Mapping[str, Any]) -> bool:
    stale_s = float(os.environ.get("DLMSEARCH_VERIFY_STALE_S", "3600"))
    if time.time() - float(holder.get("time", 0.0)) > stale_s:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
