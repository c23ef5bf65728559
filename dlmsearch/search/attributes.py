"""The names a study keeps its data under: what the search writes and what results and reports read.

They are the study's storage format: renaming one orphans the data of existing studies.
"""

# ---------------------------------------------------------------- study user attributes
SPEC_ATTR = "dlmsearch.spec"  # the study spec the study was created with (JSON)
REFERENCE_ATTR = "dlmsearch.reference"  # the dense model's latency and memory, fixed at creation
LIMITS_ATTR = "dlmsearch.limits"  # the budget in objective units
SENSITIVITY_ATTR = "dlmsearch.sensitivity"  # the sensitivity table the warm start used
MODEL_ATTR = "dlmsearch.model_fingerprint"
ENVIRONMENT_ATTR = "dlmsearch.environment"  # versions and host of the worker that created the study
VERIFIED_PREFIX = "dlmsearch.verified."  # + trial number: the full evaluator's verification of a front Plan
MEASURED_PREFIX = "dlmsearch.measured."  # + trial number: a Plan timed beside the dense model on a real machine

# ---------------------------------------------------------------- system attributes
WARM_START_ATTR = "dlmsearch.warm_start"  # study: "enqueueing" or the number of warm-start trials
HEARTBEAT_ATTR = "dlmsearch.heartbeat"  # trial: the last heartbeat's time
ADMITTED_ATTR = "dlmsearch.admitted"  # trial: counted against the study-wide trial budget

# ---------------------------------------------------------------- trial user attributes
PLAN_ATTR = "plan"  # the trial's Plan (JSON)
METRICS_ATTR = "metrics"  # objectives, cost and quality parts (floats)
FIDELITY_ATTR = "fidelity"  # the evaluator fidelity that scored it
ENV_ATTR = "env"  # versions and host of the worker
HARDWARE_ATTR = "hardware"
LATENCY_PROVENANCE_ATTR = "latency_provenance"
ERROR_ATTR = "error"  # why a trial failed
SKIPPED_ATTR = "skipped"  # why a worker did not run it
WARM_START_TRIAL_ATTR = "warm_start"  # enqueued by the warm start
