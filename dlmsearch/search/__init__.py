"""The search: study specs, the Optuna runner, baselines, Pareto fronts and exporting a Plan."""

from dlmsearch.search.pareto import feasible_front, hypervolume, parse_pick
from dlmsearch.search.results import export_plan, front_rows, open_study
from dlmsearch.search.runner import RunSummary, run_study
from dlmsearch.search.spec import StudySpec, StudySpecError, load_study_spec, spec_from_dict
from dlmsearch.search.storage import StorageError, open_storage
from dlmsearch.search.verification import Verification, verifications, verify_front

__all__ = ["RunSummary", "StorageError", "StudySpec", "StudySpecError", "Verification", "export_plan",
           "feasible_front", "front_rows", "hypervolume", "load_study_spec", "open_storage", "open_study", "parse_pick",
           "run_study", "spec_from_dict", "verifications", "verify_front"]
